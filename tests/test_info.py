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
