"""benchmarks/gpu/_profile.py: the categories a GPU profile's kernels (and CPU ops) are sorted into
for gpu_check's ``profile`` section, checked on kernel names as CUDA profiles print them and on a
real (CPU) torch.profiler run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"))

from _profile import CATEGORIES, categorize, profiler_records, summarize  # noqa: E402

# (kernel name, launching ops innermost first, expected category): names as torch.profiler shows
# them for an H100/H200 step of VM-UNet (templates shortened)
CASES = [
    ("void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<32, 4, true, true, true, false, float, float>>"
     "(SSMParamsBase)", ("SelectiveScanCudaFn",), "selective_scan"),
    ("void selective_scan_bwd_kernel<Selective_Scan_bwd_kernel_traits<128, 16, 1, true, true, true, false, false, "
     "float, float>>(SSMParamsBwd)", ("SelectiveScanCudaFnBackward",), "selective_scan"),
    ("_scan_fwd_kernel", ("_TritonScan",), "selective_scan"),
    # the contiguous() copies of the scan wrapper's inputs are layout copies, not the scan
    ("void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<at::native::"
     "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}>>(int, T3)",
     ("aten::copy_", "aten::clone", "aten::contiguous", "SelectiveScanCudaFn"), "layout_copy"),
    # the same copy kernel under the fused cross-scan (forward label, backward node)
    ("void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<at::native::"
     "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}>>(int, T3)",
     ("aten::copy_", "CrossScanFn", "vmunet::cross_scan"), "cross_scan_merge"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>(int, T2, T3)",
     ("aten::add", "CrossMergeFnBackward", "autograd::engine::evaluate_function: CrossMergeFnBackward"),
     "cross_scan_merge"),
    ("_cross_kernel", (), "cross_scan_merge"),
    ("void at::native::elementwise_kernel<128, 4, at::native::direct_copy_kernel_cuda>(int, T3)",
     ("aten::copy_", "aten::_to_copy", "aten::to"), "dtype_cast"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float, unsigned int, 4, 64, 64>(...)",
     ("aten::cat",), "layout_copy"),
    ("Memcpy DtoD (Device -> Device)", ("aten::copy_",), "layout_copy"),
    ("ampere_sgemm_128x64_tn", ("aten::mm", "aten::linear"), "matmul"),
    ("sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32_warpgroupsize1x1x1_execute_segment_k_off_kernel",
     ("aten::addmm", "aten::linear"), "matmul"),
    ("nvjet_tst_128x64_64x8_1x1_v_bz_TNT", ("aten::mm", "MmBackward0"), "matmul"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_128x128_32x3_nn_align4>(Params)", ("aten::bmm",), "matmul"),
    ("sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x32",
     ("aten::cudnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv2d"), "conv"),
    ("void at::native::(anonymous namespace)::conv_depthwise2d_forward_kernel<3, float, int>(...)",
     ("aten::_conv_depthwise2d", "aten::conv2d"), "conv"),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<float, float, float, true, false>(...)",
     ("aten::cudnn_convolution", "aten::convolution"), "conv"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>(int, float, ...)",
     ("aten::native_layer_norm", "aten::layer_norm"), "norm"),
    ("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernel<float, float>(...)",
     ("aten::native_layer_norm_backward", "NativeLayerNormBackward0"), "norm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(...)>(int, T2, T3)",
     ("aten::gelu",), "elementwise"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float>>>(...)",
     ("aten::sum",), "elementwise"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<TensorListMetadata<4>, ...>(...)",
     ("aten::_foreach_addcdiv_", "Optimizer.step#AdamW.step"), "optimizer"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>(int, T2, T3)",
     ("aten::add_", "Optimizer.step#AdamW.step"), "optimizer"),
    ("void at::native::(anonymous namespace)::nll_loss2d_forward_kernel<float>(...)",
     ("aten::nll_loss2d_forward",), "other"),
    # CPU profiles: the op's own name first
    ("aten::mkldnn_convolution", ("aten::mkldnn_convolution", "aten::convolution"), "conv"),
    ("aten::bmm", ("aten::bmm", "aten::matmul"), "matmul"),
    ("aten::copy_", ("aten::copy_", "aten::contiguous"), "layout_copy"),
    ("aten::silu", ("aten::silu",), "elementwise"),
    ("aten::cumsum", ("aten::cumsum", "_SelectiveScanCore"), "selective_scan"),
]


@pytest.mark.parametrize(("name", "ops", "expected"), CASES, ids=[f"{i}-{c[2]}" for i, c in enumerate(CASES)])
def test_categorize_real_kernel_names(name, ops, expected):
    assert categorize(name, ops) == expected


def test_summarize_sums_per_category_and_ranks_name_category_pairs():
    copy = "void at::native::elementwise_kernel<direct_copy_kernel_cuda>"
    records = [("ampere_sgemm_128x64_tn", ("aten::mm",), 60.0), (copy, ("aten::copy_",), 25.0),
               (copy, ("aten::copy_", "CrossScanFn"), 10.0), ("ampere_sgemm_128x64_tn", ("aten::mm",), 5.0)]
    s = summarize(records, top=2)
    assert s["total_us"] == 100.0
    assert list(s["categories"]) == list(CATEGORIES)
    assert s["categories"]["matmul"] == {"us": 65.0, "share": 0.65}
    assert s["categories"]["layout_copy"] == {"us": 25.0, "share": 0.25}
    assert s["categories"]["cross_scan_merge"] == {"us": 10.0, "share": 0.1}
    # the copy kernel counts once per category it was in; top 2 of the three pairs
    assert [(t["category"], t["us"], t["calls"]) for t in s["top"]] == [("matmul", 65.0, 2), ("layout_copy", 25.0, 1)]


def test_profiler_records_walk_the_op_chain_of_a_cpu_profile():
    from torch.profiler import ProfilerActivity, profile, record_function

    a, b = torch.randn(64, 64), torch.randn(64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("vmunet::cross_scan"):
            a.t().contiguous()
        torch.mm(a, b)
    records, link = profiler_records(prof.events(), on_cuda=False)
    assert link == {"linked": True, "coverage": 1.0}
    by_name = {}
    for name, ops, us in records:
        assert ops[0] == name and us > 0
        by_name.setdefault(name, []).append(ops)
    # the copy inside the label carries it in its chain; the mm has no parent
    assert any("vmunet::cross_scan" in ops for ops in by_name["aten::copy_"])
    assert by_name["aten::mm"] == [("aten::mm",)]
    cats = {categorize(n, ops) for n, ops, _ in records if n == "aten::copy_"}
    assert cats == {"cross_scan_merge"}
    assert categorize("aten::mm", ("aten::mm",)) == "matmul"
