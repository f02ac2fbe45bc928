"""One base class for the project's errors: each real failure is catchable as VmunetError (and
still as ValueError, as before the base existed)."""

from __future__ import annotations

import pytest

from vmunet.errors import VmunetError


def test_bad_inputs_of_every_layer_raise_vmunet_errors(tmp_path):
    from vmunet.data.nifti_format import index_folder
    from vmunet.data.preprocessing import validate_preprocessing
    from vmunet.data.volumes import load_volume
    from vmunet.inference import io
    from vmunet.models.safe_load import read_checkpoint

    (tmp_path / "notes.txt").write_text("x")
    failures = [
        (lambda: load_volume(tmp_path / "missing.nii.gz"), "DataError", "missing.nii.gz: file not found"),
        (lambda: index_folder(tmp_path), "LayoutError", "no dataset.json found"),
        (lambda: io.read_scan(tmp_path / "notes.txt"), "ScanReadError", "notes.txt: unsupported file type"),
        (lambda: validate_preprocessing({"dataset": "synapse"}), "PreprocessingError", "missing field"),
        (lambda: read_checkpoint(tmp_path / "none.ckpt"), "WeightsError", "none.ckpt does not exist"),
    ]
    for call, kind, message in failures:
        with pytest.raises(VmunetError, match=message) as info:
            call()
        assert type(info.value).__name__ == kind and isinstance(info.value, ValueError)


def test_first_line_of_library_errors():
    from vmunet.errors import first_line

    # SimpleITK 2.x messages as raised (the object address differs from run to run)
    gdcm = RuntimeError("Exception thrown in SimpleITK ImageSeriesReader_Execute: /tmp/SimpleITK-build/ITK/Modules/"
                        "IO/GDCM/src/itkGDCMImageIO.cxx:312:\nITK ERROR: GDCMImageIO(0x55b04c6ed2c0): Failed to "
                        "change to Implicit Transfer Syntax")
    assert first_line(gdcm) == "GDCMImageIO: Failed to change to Implicit Transfer Syntax"
    missing = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /work/src/Code/IO/src/"
                           "sitkImageReaderBase.cxx:91:\nsitk::ERROR: The file \"x.mha\" does not exist.")
    assert first_line(missing) == 'The file "x.mha" does not exist.'
    assert first_line(OSError("Expected 2048 bytes, got 848 bytes\n - could the file be damaged?")) == (
        "Expected 2048 bytes, got 848 bytes")
    assert first_line(EOFError()) == "EOFError" and first_line(ValueError("\n  \n")) == "ValueError"
