from setuptools import setup

# The design card keeps dataset_conversion/, atlas/ and postprocessing/ at the top of the repo, but
# nothing generic may land in site-packages: each is installed as a subpackage of nnunet_wmhloc.
PACKAGE_DIRS = {
    "nnunet_wmhloc": "nnunet_wmhloc",
    "nnunet_wmhloc.dataset_conversion": "dataset_conversion",
    "nnunet_wmhloc.atlas": "atlas",
    "nnunet_wmhloc.postprocessing": "postprocessing",
}
SUBPACKAGES = [
    "nnunet_wmhloc.training",
    "nnunet_wmhloc.nnunet_ext",
    "nnunet_wmhloc.evaluation",
    "nnunet_wmhloc.pipeline",
    "nnunet_wmhloc.location",
    "nnunet_wmhloc.io",
]

CONSOLE_SCRIPTS = {
    "wmhloc_env": "nnunet_wmhloc.env:main",
    "wmhloc_synth": "nnunet_wmhloc.synth:main",
    "wmhloc_convert_wmh2017": "nnunet_wmhloc.dataset_conversion.wmh2017:main",
    "wmhloc_convert_cohort": "nnunet_wmhloc.dataset_conversion.cohort:main",
    "wmhloc_splits": "nnunet_wmhloc.dataset_conversion.splits:main",
    "wmhloc_build_atlas": "nnunet_wmhloc.atlas.build:main",
    "wmhloc_region_labels": "nnunet_wmhloc.atlas.region_labels:main",
    "wmhloc_fuse": "nnunet_wmhloc.postprocessing.fuse:main",
    "wmhloc_localize": "nnunet_wmhloc.postprocessing.localize:main",
    "wmhloc_cluster": "nnunet_wmhloc.postprocessing.cluster:main",
    "wmhloc_evaluate": "nnunet_wmhloc.evaluation.evaluate:main",
    "wmhloc_compare": "nnunet_wmhloc.evaluation.compare:main",
    "wmhloc_run": "nnunet_wmhloc.pipeline.run:main",
    "wmhloc_predict": "nnunet_wmhloc.pipeline.predict:main",
    "wmhloc_export_models": "nnunet_wmhloc.pipeline.export:main",
}

DASK = ["dask==2026.8.0", "distributed==2026.8.0"]

setup(
    name="nnunet_wmhloc",
    version="0.1.0",
    description="nnU-Net v2 plugin: white-matter lesion and region segmentation, regional lesion loads, "
    "patient clustering (MICCAI 2017 WMH challenge and new cohorts)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=list(PACKAGE_DIRS) + SUBPACKAGES,
    package_dir=PACKAGE_DIRS,
    package_data={"nnunet_wmhloc.atlas": ["*.tsv"], "nnunet_wmhloc.evaluation": ["*.csv"],
                  "nnunet_wmhloc.pipeline": ["templates/*.j2"]},
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "torch>=2.6",  # weights-only loading of shared checkpoints (a bypass before 2.6: CVE-2025-32434)
        "SimpleITK>=2.2",
        "nibabel",  # NaN checks: ITK's NIfTI reader silently turns NaN into 0
        "batchgeneratorsv2>=0.3.6",
        "numpy",
        "scipy",
        "scikit-learn",
        "scikit-image",
        "acvl-utils",
        "matplotlib",
        "tqdm",
        "monai>=1.5",  # UNETR and MedNeXt (MedNeXt since 1.5)
        "jinja2",  # the report's HTML template (torch brings it too, but we use it directly)
    ],
    # Dask for --scheduler (cohorts on a cluster); dask and distributed are released together and must match.
    # The tests start a real scheduler and workers, so the test extra has them too.
    # nilearn ships the ICBM152 2009a T1 with its WM/GM probability maps: real ground truth for the WM estimate
    # bids-validator-deno: the official BIDS schema validator (its bundled schema and deno binary: runs offline),
    # checks wmhloc_predict --layout bids output in the tests
    # selenium drives Debian's chromium through its chromedriver for the report's real-browser test
    # pytest-xdist: `make test` runs two workers (--dist loadgroup, --no-loadscope-reorder needs >= 3.6); filelock: the
    # workers share the session's synthetic cohort and trained runs, made once under a lock (tests/conftest.py)
    extras_require={"dask": DASK, "test": ["pytest", "pytest-xdist>=3.6", "filelock", "nilearn", *DASK,
                                           "bids-validator-deno", "selenium>=4.11"]},
    entry_points={"console_scripts": [f"{k}={v}" for k, v in CONSOLE_SCRIPTS.items()]},
)
