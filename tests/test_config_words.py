"""Unknown settings and config keys are said with their noun agreeing with the list's length: "unknown train
setting ['speed']", "unknown keys ['seed', 'trian']" (were "setting(s)", "key(s)")."""

import json

import pytest

from wavegen.config import ConfigError, TrainConfig, from_dict
from wavegen.resolve import resolve_model


@pytest.mark.parametrize("data, said", [({"speed": 3}, "unknown train setting ['speed']; known: "),
                                        ({"speed": 3, "pace": 1}, "unknown train settings ['pace', 'speed']; known: ")])
def test_unknown_settings_are_one_setting_or_two_settings(data, said):
    with pytest.raises(ConfigError) as caught:
        from_dict(TrainConfig, data, "train")
    assert str(caught.value).startswith(said), caught.value


@pytest.mark.parametrize("extra, said", [({"seed": 3}, "unknown key ['seed']: "),
                                         ({"seed": 3, "trian": {}}, "unknown keys ['seed', 'trian']: ")])
def test_unknown_keys_of_a_config_file_are_one_key_or_two_keys(tmp_path, extra, said):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"preset": "samplernn-tiny", **extra}))
    with pytest.raises(ConfigError) as caught:
        resolve_model(str(path))
    assert str(caught.value).startswith(f"{path}: {said}"), caught.value
