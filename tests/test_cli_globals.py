"""Global flags work before or after the command; library errors name fields, the CLI names flags."""

from __future__ import annotations

import pytest
import torch

from diffing.cli.common import cli_message
from diffing.cli.main import build_parser, main
from diffing.errors import DiffingError


@pytest.mark.parametrize(
    "argv",
    [
        ["--quiet", "analyze", "A", "B"],
        ["analyze", "A", "B", "--quiet"],
        ["analyze", "--quiet", "A", "B"],
        ["crosscoder", "train", "STORE", "--out", "O", "--quiet"],
        ["--quiet", "crosscoder", "train", "STORE", "--out", "O"],
    ],
)
def test_quiet_is_accepted_before_and_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.debug is False


def test_global_flags_default_off_and_debug_works_after_the_command():
    parser = build_parser()
    args = parser.parse_args(["analyze", "A", "B"])
    assert args.quiet is False and args.debug is False
    assert parser.parse_args(["analyze", "A", "B", "--debug"]).debug is True
    nested = [
        "--debug",
        "refusal",
        "eval",
        "D",
        "--harmful",
        "h",
        "--harmless",
        "s",
        "--out",
        "o",
        "--quiet",
    ]
    assert parser.parse_args(nested).quiet is True and parser.parse_args(nested).debug is True


def test_version_after_the_command(capsys):
    assert main(["analyze", "--version"]) == 0
    assert capsys.readouterr().out.startswith("diffing ")


def _selection_error() -> DiffingError:
    """The refusal selection error, raised from the Python API (no candidate passes the filters)."""
    from diffing.refusal.select import CandidateScores, select_direction

    none = torch.zeros(2, 3)
    scores = CandidateScores(none, none, none, torch.zeros(2, 3, dtype=torch.bool), 0.0, 0.0)
    with pytest.raises(DiffingError) as err:
        select_direction(None, None, None, None, [], [], scores=scores)
    return err.value


def test_library_error_names_fields_and_the_cli_names_flags():
    err = _selection_error()
    text = str(err)
    assert "loosen them with `kl_threshold` / `induce_threshold` / `max_layer_fraction`" in text
    assert "--" not in text
    assert err.fields == ("kl_threshold", "induce_threshold", "max_layer_fraction")
    shown = cli_message(err)
    assert "loosen them with --kl-threshold / --induce-threshold / --max-layer-fraction" in shown
    assert shown.replace("--kl-threshold", "`kl_threshold`").startswith(text[:40])


def test_cli_message_switches_and_unlisted_names():
    err = DiffingError(
        "pass `allow_pickle=True`, or `filter_train=False`, or `pair`; `other` stays",
        fields=("allow_pickle", "filter_train", "pair"),
    )
    assert cli_message(err) == (
        "pass --allow-pickle, or --no-filter, or --base/--finetuned; `other` stays"
    )
    assert cli_message(DiffingError("plain `text`")) == "plain `text`"


def test_same_error_from_python_names_the_field_and_from_the_cli_the_flag(tmp_path, capsys):
    from diffing.store.format import read_manifest

    missing = tmp_path / "no-store"
    with pytest.raises(DiffingError, match=r"harvest one into it first \(`out`\)") as err:
        read_manifest(missing)
    assert err.value.fields == ("out",)
    assert main(["store-info", str(missing)]) == 2
    line = capsys.readouterr().err
    assert "harvest one into it first (--out)" in line and "`out`" not in line
