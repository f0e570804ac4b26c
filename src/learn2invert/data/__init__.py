"""Datasets and transforms: embedded defaults (natural photographs, phantoms, brain template), on-disk formats, measurement simulation."""
from .natural import IMAGE_NAMES, TEST_IMAGES, TRAIN_IMAGES, NaturalPatches, TestImages, available_images, load_image
from .phantoms import EllipsesDataset, random_ellipses, shepp_logan
from .image_folder import ImageFolder
from ..operators.phase import smooth_phase
from .brain import BrainPatches3D, BrainSlices, load_mni152, split_slice_indices
from .brain_mix import BrainSliceMix
from .dicom import DicomImages, read_dicom, read_dicom_series
from .fastmri import FastMRIImages, FastMRISingleCoil, fastmri_crop_size, kspace_to_magnitude, parse_ismrmrd_header
from .nifti import NiftiSlices, load_nifti, save_nifti
from .skipping import SkipBadFiles
from .multicoil import MultiCoilSlices

__all__ = [
    # embedded, no download
    "NaturalPatches", "TestImages", "load_image", "available_images", "IMAGE_NAMES", "TRAIN_IMAGES", "TEST_IMAGES",
    "EllipsesDataset", "random_ellipses", "shepp_logan",
    "BrainSlices", "BrainPatches3D", "BrainSliceMix", "load_mni152", "split_slice_indices", "smooth_phase",
    # your own files
    "ImageFolder", "DicomImages", "read_dicom", "read_dicom_series", "NiftiSlices", "load_nifti", "save_nifti",
    "FastMRIImages", "FastMRISingleCoil", "MultiCoilSlices", "kspace_to_magnitude", "fastmri_crop_size",
    "parse_ismrmrd_header", "SkipBadFiles",
]
