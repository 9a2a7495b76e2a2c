"""wavegen info's text: every line a person reads is the model's fact, in a form read at a glance."""

from wavegen import cli
from wavegen.models import build_model, resolve_preset


def test_info_text_states_the_presets_facts(capsys):
    assert cli.main(["info", "wavenet-tiny"]) == 0
    lines = dict(line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines() if not line.endswith(":"))
    config = resolve_preset("wavenet-tiny")
    n = sum(p.numel() for p in build_model(config).parameters())
    assert lines["model"] == "preset wavenet-tiny (random weights)"
    assert lines["parameters"] == f"{n:,} ({n / 1e6:.2f}M)" and "," in lines["parameters"]  # 75,144, not 75144
    assert lines["sample_rate"] == str(config["data"]["sample_rate"])
    assert lines["torch"] == "available"
    assert cli.main(["info", "wavenet-tiny", "--json"]) == 0  # the JSON keeps the number
    import json

    assert json.loads(capsys.readouterr().out)["parameters"] == n


def test_json_followed_by_a_file_name_says_that_json_prints(tmp_path, capsys):
    """bench's --json takes a file; info's prints. "info --json out.json" made out.json the model, and
    said only "no such preset": now it says what --json does. A config .json that is there is a model."""
    out = tmp_path / "out.json"
    assert cli.main(["info", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: no such model; --json prints the result and takes no file name: to keep it in a file, " \
           f"write --json > {out}" in err
    assert not out.exists()
    import json

    out.write_text(json.dumps(resolve_preset("wavenet-tiny")))
    assert cli.main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "wavenet"
