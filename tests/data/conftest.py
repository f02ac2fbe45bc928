"""Shared tiny synthetic data sets (session-scoped so each is generated once)."""

from __future__ import annotations

import pytest

from vmunet.data.synth import synth_synapse


@pytest.fixture(scope="session")
def synapse_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synapse")
    synth_synapse(out, cases=5, size=32, slices=6, seed=1)
    return out


@pytest.fixture(scope="session")
def synapse_raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("synapse_raw")
    synth_synapse(out, cases=5, size=32, slices=6, seed=1, raw=True)
    return out


@pytest.fixture(scope="session")
def isic_root(tmp_path_factory):
    from vmunet.data.synth import synth_isic

    out = tmp_path_factory.mktemp("isic")
    synth_isic(out, cases=6, size=32, seed=2)
    return out


@pytest.fixture(scope="session")
def nifti_ct(tmp_path_factory):
    from vmunet.data.synth import synth_nifti

    out = tmp_path_factory.mktemp("nifti_ct")
    synth_nifti(out, cases=4, size=24, slices=6, seed=3, layout="nnunet", modality="CT", test_cases=2)
    return out


@pytest.fixture(scope="session")
def nifti_mr(tmp_path_factory):
    from vmunet.data.synth import synth_nifti

    out = tmp_path_factory.mktemp("nifti_mr")
    synth_nifti(out, cases=3, size=24, slices=6, seed=4, layout="decathlon", modality="MR", test_cases=1)
    return out
