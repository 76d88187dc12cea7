"""The training CLI (`python -m train`): bad data and bad configs exit non-zero and write nothing."""

from __future__ import annotations

import pytest

from tests.support import store_state
from train.__main__ import EXIT_BAD_DATA, main, parser
from train.config import build_config, read_config_file


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,timestamp\n1,5\n", "column 'item_id': missing required column"),
        (
            "user_id,item_id,timestamp\n1,2,noon\n",
            "column 'timestamp': row 2 (header = row 1): unparsable timestamp 'noon'",
        ),
        (
            "user_id,item_id,timestamp,weight\n1,2,3,x\n",
            "column 'weight': row 2 (header = row 1): weight must be a non-negative",
        ),
        ("", "file is empty"),
    ],
)
def test_bad_data_exits_non_zero_and_leaves_stores_untouched(tmp_path, bentoml_home, capsys, content, message):
    feature_store = tmp_path / "feature_store"
    feature_store.mkdir()
    before = store_state(bentoml_home, feature_store)
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code = main(["--interactions", str(bad), "--feature-store", str(feature_store), "--report-dir", str(tmp_path)])
    assert code == EXIT_BAD_DATA
    assert f"error: {bad}: {message}" in capsys.readouterr().err
    assert store_state(bentoml_home, feature_store) == before


def test_duplicate_item_ids_exit_non_zero(tmp_path, synthetic_files, bentoml_home, capsys):
    items = tmp_path / "items.csv"
    items.write_text(synthetic_files["csv"]["items"].read_text() + "i0,Again,1.0,g1\n")
    feature_store = tmp_path / "feature_store"
    before = store_state(bentoml_home, tmp_path)
    code = main(
        [
            "--interactions", str(synthetic_files["csv"]["interactions"]), "--items", str(items),
            "--feature-store", str(feature_store), "--report-dir", str(tmp_path / "reports"),
        ]
    )  # fmt: skip
    assert code == EXIT_BAD_DATA
    assert "column 'item_id': row 202 (header = row 1): duplicate id 'i0'" in capsys.readouterr().err
    assert store_state(bentoml_home, tmp_path) == before
    assert not feature_store.exists() and not (tmp_path / "reports").exists()


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text("factors = 8\nfactorz = 9\n")
    assert main(["--config", str(config)]) == EXIT_BAD_DATA
    assert "unknown key 'factorz' (did you mean 'factors'?)" in capsys.readouterr().err


def test_data_too_short_to_train_a_ranker_exits_2_and_says_what_to_change(tmp_path, bentoml_home, capsys):
    data = tmp_path / "short.csv"
    data.write_text("user_id,item_id,timestamp\n1,a,1700000000\n1,b,1700003600\n2,a,1700007200\n")
    feature_store = tmp_path / "feature_store"
    before = store_state(bentoml_home, feature_store)
    code = main(["--interactions", str(data), "--feature-store", str(feature_store), "--report-dir", str(tmp_path)])
    assert code == EXIT_BAD_DATA
    assert "error: the interactions span 0.1 days; the ranker learns from what users take in the 7 days" in (
        capsys.readouterr().err
    )
    assert store_state(bentoml_home, feature_store) == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("typo.toml", "factorz = 9\n", "typo.toml: unknown key 'factorz' (did you mean 'factors'?)"),
        ("broken.toml", "factors = [\n", "broken.toml: not valid TOML: "),
        ("c.json", "[1]", "c.json: expected a table of keys, got list"),
        ("c.yaml", "factors: 8\n", "c.yaml: unsupported config format '.yaml' (use a .toml or .json file)"),
        ("bad.toml", 'factors = "x"\n', "bad.toml: key 'factors': Input should be a valid integer"),
        ("step.toml", "cut_step_days = 5\n", "step.toml: key 'cut_step_days': expected a step that divides 7 days"),
        ("absent.toml", None, "absent.toml: config file not found"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, capsys, name, content, message):
    config = tmp_path / name
    if content is not None:
        config.write_text(content)
    assert main(["--config", str(config), "--no-save"]) == EXIT_BAD_DATA
    assert f"{tmp_path}/{message}" in capsys.readouterr().err


def test_config_keys_take_either_spelling_and_flags_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('ranker-iterations = 7\nfactors = 8\ncolumns = "userId=user_id"\n')
    config = build_config(read_config_file(path), {"factors": "9", "sep": "tab"}, path)
    assert (config.ranker_iterations, config.factors, config.sep) == (7, 9, "\t")
    assert config.columns == {"userId": "user_id"}


def test_help_describes_every_flag_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "{YetiRank,PairLogit,Logloss}" in out and "Exit codes:" in out and "Your own data" in out
    for action in parser()._actions:
        assert action.help and not action.help.startswith("(default"), action.dest
