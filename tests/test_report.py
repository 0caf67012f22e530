"""The report's published shape: the shipped JSON Schema is the one derived from the typed rows,
every report is validated when written and when read, and a damaged one is one line of error."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

import sreval
from sreval.errors import DataError
from sreval.report import READABLE, SCHEMA, report_schema, read_report, schema_errors, write_report
from tests.test_cli import make_dataset
from tests.tiny import TinySR, export


def _shipped() -> dict:
    return json.loads((resources.files("sreval") / "report.schema.json").read_text())


def test_the_shipped_schema_is_the_typed_report() -> None:
    """After changing the TypedDicts of sreval/report.py, regenerate the shipped file in the same
    commit: `SREVAL_UPDATE_SCHEMA=1 python -m pytest tests/test_report.py -k shipped`."""
    if os.environ.get("SREVAL_UPDATE_SCHEMA"):
        (Path(__file__).parent.parent / "sreval" / "report.schema.json").write_text(
            json.dumps(report_schema(), indent=2) + "\n")
    assert _shipped() == report_schema()
    jsonschema.Draft202012Validator.check_schema(_shipped())


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("r")
    model = export(TinySR(scale=2), root / "tiny.onnx")
    data = make_dataset(root / "set", n=2, hw=(20, 16))
    out = root / "run"
    rep = sreval.attack(model, data, alpha="8/255", steps=2, device="cpu", out=out)
    return out, rep


def test_a_written_report_validates_with_any_json_schema_tool(report: tuple[Path, dict]) -> None:
    out, rep = report
    on_disk = json.loads((out / "report.json").read_text())
    jsonschema.validate(on_disk, _shipped())  # an independent validator, the shipped file
    assert on_disk["schema"] == SCHEMA and on_disk["kind"] == "basic" and rep["kind"] == "basic"
    assert read_report(out)["results"] == on_disk["results"]


@pytest.mark.parametrize("damage, where", [
    (lambda r: r.update(results=[1, 2]), "results/0"),
    (lambda r: r["results"][0].update(psnr_sr="high"), "results/0/psnr_sr"),
    (lambda r: r.pop("kind"), "kind"),
    (lambda r: r.update(summary={"n": 1}), "summary"),
    (lambda r: r["results"][0].pop("image"), "image"),
])
def test_a_damaged_report_is_refused_in_one_line(report: tuple[Path, dict], tmp_path: Path, damage, where) -> None:
    rep = json.loads((report[0] / "report.json").read_text())
    damage(rep)
    (tmp_path / "report.json").write_text(json.dumps(rep))
    with pytest.raises(DataError, match="a damaged report") as e:
        read_report(tmp_path)
    assert where in str(e.value) and "\n" not in str(e.value)


def test_reports_of_the_first_schema_stay_readable(report: tuple[Path, dict], tmp_path: Path) -> None:
    rep = json.loads((report[0] / "report.json").read_text())
    rep.pop("kind")
    rep["schema"] = READABLE[0]
    (tmp_path / "report.json").write_text(json.dumps(rep))
    assert read_report(tmp_path)["schema"] == "sreval.report/1"


def test_the_writer_refuses_a_report_that_breaks_the_schema(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="breaks its schema"):
        write_report(tmp_path, kind="basic", command="attack", model=None, data=None, config={}, environment={},
                     conventions={}, results=[{"image": "a", "attack": "basic", "alpha": "8/255"}])
    assert not (tmp_path / "report.json").exists()
    assert schema_errors({"schema": SCHEMA})  # and says where
