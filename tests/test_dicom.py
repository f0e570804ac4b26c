"""Real DICOM scans as held-out truths (pydicom's own test files; skipped without pydicom)."""
import pytest
import torch

pytest.importorskip("pydicom")

from learn2invert.data import DicomImages, read_dicom  # noqa: E402
from learn2invert.data.dicom import resolve_dicom_paths  # noqa: E402


def test_pydicom_mr_slice_is_read_with_spacing_and_scaled_to_unit_range():
    images = DicomImages("pydicom:MR_small.dcm", repeats=3)
    assert len(images) == 3 and images.pixel_spacing == [(0.3125, 0.3125)]
    x = images[2]
    assert x.shape == (2, 64, 64) and torch.equal(x, images[0])
    assert float(x[0].min()) == 0.0 and float(x[0].max()) == 1.0 and not x[1].any()
    ct = DicomImages("pydicom:CT_small.dcm", complex=False, size=96)
    assert ct[0].shape == (1, 96, 96)
    raw, _ = read_dicom(resolve_dicom_paths("pydicom:CT_small.dcm")[0])
    assert raw.min() < -500  # Hounsfield units: rescale slope and intercept applied (air is about -1000)


def test_bad_dicom_inputs_name_the_file(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(ValueError, match="scan.dcm"):
        DicomImages(bad)
    with pytest.raises(ValueError, match="does not exist"):
        DicomImages(tmp_path / "missing.dcm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.dcm files"):
        DicomImages(tmp_path / "empty")
    with pytest.raises(ValueError, match="no test file named"):
        DicomImages("pydicom:nothing_here.dcm")
