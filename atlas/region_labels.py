"""wmhloc_region_labels: carry the refined 36-label atlas into subjects' native space.

One subject:
    wmhloc_region_labels --t1 T1.nii.gz [--flair FLAIR.nii.gz] [--wm-mask WM.nii.gz] \\
        --atlas-dir refined_atlas/ --output sub01_regions.nii.gz
writes sub01_regions.nii.gz (labels 0..36 on the grid of --flair if given, else of --t1, zero outside the
subject's WM), sub01_regions.tfm (ITK transform: subject point → atlas point), sub01_regions_qc.png
(the WM outline over the T1 beside the labels, three planes) and sub01_regions.json (WM, GM and brain
volumes, a warning when the WM/brain ratio is not an adult brain's, registration figures). The four are
built in a hidden temporary folder and moved into place together, the label map last: an interrupted
run leaves nothing that blocks the next (sidecars without their label map, with our JSON among them,
are an unfinished run's and are replaced). Same input, same output: every run gives the same bits.
A cohort:
    wmhloc_region_labels --input DIR|CSV --atlas-dir refined_atlas/ --output OUTDIR --workers 2
DIR holds per-subject folders (<id>/T1.nii.gz or the challenge's <id>/pre/T1.nii.gz, with FLAIR.nii.gz
beside it if present), flat files <id>_t1[_0000].nii.gz (+ <id>_flair[_0000].nii.gz) or a BIDS root; a CSV
has columns subject,t1 and optionally flair,wm_mask (the converters' cohort walker, dataset_conversion/
subjects.py). OUTDIR gets <subject>.nii.gz (+ .tfm, _qc.png, .json), named by the one subject id (the
challenge's 12 -> wmh012, as wmhloc_convert_wmh2017 --region-labels reads them), and
region_labels_summary.csv; a failed subject is listed there with its reason and the exit code is 1.

Failure is loud: an implausible transform, or atlas WM landing mostly outside the subject's WM, ends
with an error and no label map."""
from __future__ import annotations

import sys

from nnunet_wmhloc import cli, parallel
from nnunet_wmhloc.atlas.cohort_labels import SUMMARY, CohortLabels, cohort_subjects, region_labels_cohort  # noqa: F401
from nnunet_wmhloc.atlas.label_outputs import (SubjectLabels, check_outputs, qc_png, region_labels_subject,  # noqa: F401
                                               sidecars, write_outcome)
from nnunet_wmhloc.atlas.subject_labels import (MIN_BRAIN_ML, MIN_COVERAGE, MIN_WM_DICE, MIN_WM_ML,  # noqa: F401
                                                TOOL, WM_BRAIN_RATIO, Outcome, RegistrationFailed, label_subject)
from nnunet_wmhloc.io import WMHLocError

STRIPPED_CHOICES = {"auto": None, "yes": True, "no": False}


def _parser():
    p = cli.parser("wmhloc_region_labels", __doc__.splitlines()[0])
    g = p.add_argument_group("one subject")
    g.add_argument("--t1", help="T1-weighted image (skull-stripped or not)")
    g.add_argument("--flair", help="FLAIR on the same grid as the T1; the output then uses its grid, and "
                   "FLAIR-bright lesions are counted as WM")
    g.add_argument("--wm-mask", help="the subject's WM mask (non-zero = WM), on the output grid: replaces "
                   "the built-in WM estimate")
    c = p.add_argument_group("a cohort")
    c.add_argument("--input", help="cohort folder or CSV (columns subject,t1[,flair,wm_mask])")
    c.add_argument("--workers", type=cli.workers_int, default=1,
                   help="subjects processed in parallel (local processes)")
    parallel.add_argument(c)
    p.add_argument("--atlas-dir", required=True, help="folder written by wmhloc_build_atlas (or the raw Eve folder)")
    p.add_argument("-o", "--output", required=True, help="label map .nii.gz (one subject) or output folder (cohort)")
    p.add_argument("--deformable", action="store_true", help="add a coarse B-spline refinement after the affine")
    p.add_argument("--skull-stripped", nargs="?", const="yes", default="auto", choices=list(STRIPPED_CHOICES),
                   help="whether the T1 is skull-stripped (brain on a constant background): auto (default) "
                   "detects it; a bare --skull-stripped means yes; 'no' for a raw head whose air was zeroed")
    p.add_argument("--save-masks", action="store_true", help="also write <output>_brainmask / _wm .nii.gz (one subject)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def _main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if (a.t1 is None) == (a.input is None):
        raise WMHLocError("give either --t1 (one subject) or --input (a cohort)")
    if a.input is None and a.scheduler:
        raise WMHLocError("--scheduler is for a cohort (--input)")
    if a.input is not None and (a.flair or a.wm_mask):
        raise WMHLocError("--flair/--wm-mask are for one subject; give them as CSV columns for a cohort")
    if a.scheduler:
        parallel.require()  # before anything is written
    opts = dict(deformable=a.deformable, skull_stripped=STRIPPED_CHOICES[a.skull_stripped], overwrite=a.overwrite)
    if a.input is not None:
        c = region_labels_cohort(a.input, a.atlas_dir, a.output, workers=a.workers, scheduler=a.scheduler, **opts)
        print(f"{a.output}: {len(c.rows) - len(c.failed)}/{len(c.rows)} subjects labelled; summary in {SUMMARY}",
              file=sys.stderr)
        for r in c.failed:
            print(f"error: {r['reason']}", file=sys.stderr)
        return 1 if c.failed else 0
    r = region_labels_subject(a.t1, a.atlas_dir, a.output, flair=a.flair, wm_mask=a.wm_mask,
                              save_masks=a.save_masks, **opts)
    q = r.quality
    for w in q["warnings"]:
        print(f"warning: {r.output}: {w}", file=sys.stderr)
    print(f"{r.output}: {q['labelled_ml']:.0f} ml of WM labelled ({100 * q['subject_wm_labelled']:.0f}% of the "
          f"subject's WM), atlas/subject WM Dice {q['wm_dice_atlas_vs_subject']:.2f}, {q['seconds']:.1f} s",
          file=sys.stderr)
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
