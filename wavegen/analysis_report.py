"""The text report of :func:`wavegen.analysis.compare_renders`: ``wavegen eval --renders`` prints it.

:func:`format_comparison` lays a result out as a table (one column per set: every summary feature,
then every set's distance to the reference split), a note for each undefined number saying why, and
the verdict under it (album likeness and the Frechet distances). The reference is the split the
comparison was made against (``result["split"]``: test, or val with ``--split val``), shown in the
column named "test"; "train" is the training split, the album the likeness is scaled by. Every
number says which of them it is of.
"""

from __future__ import annotations

import math

from wavegen.analysis import SETS
from wavegen.analysis_features import FRAME_FEATURES, SILENT_DB, SUMMARY_FEATURES, TEMPO_SECONDS

# why a number can be undefined (NaN in the result, null in JSON, "-" in the table)
UNDEFINED = {
    **{key: f"every frame is silent (under {SILENT_DB:g} dBFS): no spectrum or pitch to measure"
       for key in ("centroid_hz_median", "bandwidth_hz_median", "flatness_median", "contrast_db_median",
                   "chroma_entropy_bits_median", "chroma_profile_similarity", "periodic_fraction")},
    "tempo_bpm": f"no excerpt of {TEMPO_SECONDS:g} s or more to estimate a tempo on (its audio, or "
                 "--max-seconds, is shorter)",
}


def _defined(value) -> bool:
    return value is not None and math.isfinite(value)


def _cells(values, spec: str) -> str:
    """Table cells 13 wide: each value in ``spec``, or "-" where it is missing or undefined."""
    return "".join(f"{v:13{spec}}" if _defined(v) else f"{'-':>13s}" for v in values)


def format_comparison(result: dict) -> str:
    """The summary table and distances as text (one column per set). An undefined number (NaN:
    nothing to measure it on) shows as "-" with a note under the table saying why."""
    sets = [s for s in SETS if s in result["sets"]]
    lines = [f"{'':28s}" + "".join(f"{s:>13s}" for s in sets)]
    notes: dict[tuple[str, str], list[str]] = {}  # (sets, why) → the keys undefined there for that reason
    for key in SUMMARY_FEATURES:
        if key not in result["sets"][sets[0]]["summary"]:
            continue
        values = [result["sets"][s]["summary"][key] for s in sets]
        lines.append(f"{key:28s}" + _cells(values, ".3f"))
        missing = [s for s, v in zip(sets, values) if not _defined(v)]
        if missing:
            notes.setdefault((", ".join(missing), UNDEFINED.get(key, "not defined on this audio")), []).append(key)
    distance = {s: result["distances"].get(s) for s in sets}
    ref = _reference(result)
    lines += ["", f"distance to the {ref} (0: identical; train = the training split, the album; noises = noise; "
                  f"the test column is the {ref} itself)",
              f"{'frechet (MFCC+chroma+contrast)':28s}"
              + _cells([d and d["frechet"] for d in distance.values()], ".2f")]
    for key in FRAME_FEATURES:
        lines.append(f"{key + ' (W1/std)':28s}" + _cells([d and d["features"][key] for d in distance.values()], ".3f"))
    if notes:
        lines += ["", "-: undefined"]
        lines += [f"- {', '.join(keys)} of {where}: {why}" for (where, why), keys in notes.items()]
    lines += ["", *_verdict_lines(result["verdict"], ref)]
    return "\n".join(lines)


def _reference(result: dict) -> str:
    """The split the renders are compared against, as the report names it: "test split", "val split"."""
    return f"{result.get('split') or 'test'} split"


def _verdict_lines(v: dict, ref: str = "test split") -> list[str]:
    """The verdict under the table: album likeness (or why there is none) and the Frechet distances
    to ``ref`` (the reference split), each number named by the set it is of (``periodic_fraction_album``
    is the reference split's, not the training split's)."""
    lines = []
    if v.get("renders_silent"):
        lines.append(f"album likeness undefined: the renders are silent (every frame under {SILENT_DB:g} dBFS): "
                     "no sound to place between the album and noise")
    elif _defined(v.get("album_likeness")):
        lines.append(f"album likeness {v['album_likeness']:.2f} (1: as near the {ref} as the training split, "
                     "0: as far as noise)")
    elif "album_likeness" in v:
        lines.append(f"album likeness undefined: the nearer noise ({v['frechet_noise']:.2f}) is no farther from "
                     f"the {ref} than the training split ({v['frechet_album']:.2f}), so there is no scale from "
                     "album to noise to place the renders on; compare the Frechet distances instead")
    lines.append(f"frechet to the {ref}: renders {v['frechet_renders']:.2f}"
                 + (" (silence's)" if v.get("renders_silent") else "")
                 + f", nearer noise {v['frechet_noise']:.2f}"
                 + (f", training split {v['frechet_album']:.2f}" if "frechet_album" in v else "")
                 + f"; periodic frames: renders {_fraction(v['periodic_fraction_renders'])}, "
                   f"{ref} {_fraction(v['periodic_fraction_album'])}")
    return lines


def _fraction(value) -> str:
    """A periodic fraction in the verdict: "n/a (no sounding frame)" where it is undefined."""
    return f"{value:.2f}" if _defined(value) else "n/a (no sounding frame)"
