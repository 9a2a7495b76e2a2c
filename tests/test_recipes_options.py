"""The recipes' option parsing, run with bash for real: an option that takes a value, given without
one (last on the line, followed by another option, or empty), is "OPTION needs a value", exit code 2,
before any stage runs or anything is written (it was bash's "$2: unbound variable", exit 1)."""

import pytest

from test_recipes_stages import _calls, _recipe, repo  # noqa: F401  (repo: the fixture)

# every option that takes a value, per recipe (longform needs its MODEL besides)
VALUE_OPTIONS = {
    "bench": ["--stage", "--stop-stage", "--threads", "--out"],
    "demo": ["--stage", "--stop-stage", "--dir", "--steps"],
    "accelerate": ["--stage", "--stop-stage", "--model", "--config", "--dir", "--recordings", "--steps",
                   "--num-processes", "--machine-rank", "--main-ip", "--set"],
    "conditioned": ["--input", "--work", "--model", "--steps", "--seconds", "--eval-seconds", "--sample-rate",
                    "--set", "--stage", "--stop-stage"],
    "stream": ["--model", "--dir", "--steps", "--port", "--host", "--seed", "--archive", "--stage", "--stop-stage"],
    "longform": ["--hours", "--seconds", "--streams", "--dir", "--backend", "--device", "--precision", "--format",
                 "--seed", "--stage", "--stop-stage"],
}
CASES = [(name, option) for name, options in VALUE_OPTIONS.items() for option in options]


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.mark.parametrize("name, option", CASES, ids=[f"{name}{option}" for name, option in CASES])
def test_a_value_option_without_its_value_is_a_usage_error(repo, name, option):  # noqa: F811
    before = _files(repo.parent)
    model = ["some-model"] if name == "longform" else []
    # last on the line; followed by another option (it was taken as the value); an empty value
    for tail in ([option], [option, "--stage", "1"], [option, ""]):
        out = _recipe(repo, name, *model, *tail)
        assert out.returncode == 2, (tail, out.stdout, out.stderr)
        assert f"{option} needs a value" in out.stderr, (tail, out.stderr)
        assert "unbound variable" not in out.stderr and out.stdout == "", (tail, out.stdout, out.stderr)
    assert _calls(repo) == [] and _files(repo.parent) == before  # no stage ran, nothing was written


def test_every_value_option_of_the_recipes_is_covered():
    """A value option added to a recipe later is listed above (else its check goes untested)."""
    import re
    from test_recipes_stages import RECIPES

    for name, options in VALUE_OPTIONS.items():
        text = (RECIPES / name / "run.sh").read_text()
        loop = text[text.index("while [ $# -gt 0 ]"):text.index("\ndone\n")]
        found = set(re.findall(r"^\s+(--[a-z-]+)\) need_value", loop, re.M))
        found |= {o for line in re.findall(r"^\s+(--[a-z|-]+)\)\n\s+if \[ \$# -lt 2 \]", loop, re.M)
                  for o in line.split("|")}
        assert found == set(options), name
