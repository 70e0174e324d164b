"""spec.json v1 and original SST-GUI specs (sst_desktop.data.spec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sst_desktop.data.spec import Spec, load_spec, save_spec
from sst_desktop.errors import SpecError
from tests._project_helpers import ROWS, write_csv


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


@pytest.fixture
def project_dir(tmp_path) -> Path:
    root = tmp_path / "proj"
    write_csv(root / "meta.csv", ROWS)
    return root


def _v1(**overrides):
    data = {
        "version": 1,
        "root": ".",
        "csv": "meta.csv",
        "primary_key": "pk",
        "img_path": "{Dataset}/{Image_name}.jpg",
        "image_root": "../images",
        "group_by": ["Dataset"],
        "sam2": "sam2.1_hiera_tiny",
        "device": "cpu",
        "image_size": 512,
        "mask_mode": "position",
    }
    data.update(overrides)
    return data


def test_load_v1_resolves_relative_paths_against_spec_folder(project_dir):
    spec = load_spec(_write(project_dir / "spec.json", _v1(checkpoint="models/t.pt")))
    assert spec.root == project_dir
    assert spec.csv == project_dir / "meta.csv"
    assert spec.image_root == project_dir.parent / "images"
    assert spec.checkpoint == project_dir / "models" / "t.pt"
    assert spec.group_by == ["Dataset"]
    assert (spec.sam2, spec.device, spec.image_size, spec.mask_mode) == (
        "sam2.1_hiera_tiny",
        "cpu",
        512,
        "position",
    )
    assert spec.ref_masks_dir == project_dir / "ref_masks"
    assert not spec.legacy


def test_defaults_for_optional_fields(project_dir):
    data = {"version": 1, "csv": "meta.csv", "primary_key": "pk", "img_path": "Image_name"}
    spec = load_spec(_write(project_dir / "spec.json", data))
    assert spec.root == project_dir
    assert spec.image_root is None and spec.images_root == project_dir  # the CSV's folder
    assert spec.group_by == []
    assert spec.device == "auto" and spec.image_size == 1024 and spec.mask_mode == "original"
    assert spec.sam2 == "sam2.1_hiera_large"
    assert spec.checkpoint is None
    assert spec.display_name == "proj"


def test_minimal_spec_uses_the_documented_defaults(tmp_path):
    # README: version defaults to 1, root to ".", csv to root/master.csv; no key says "original".
    write_csv(tmp_path / "proj" / "master.csv", ROWS)
    data = {"primary_key": "pk", "img_path": "Image_name", "image_size": 512}
    spec = load_spec(_write(tmp_path / "proj" / "spec.json", data))
    assert not spec.legacy
    assert spec.root == tmp_path / "proj" and spec.csv == tmp_path / "proj" / "master.csv"
    assert spec.image_size == 512 and spec.version == 1


def test_load_accepts_the_folder(project_dir):
    _write(project_dir / "spec.json", _v1())
    assert load_spec(project_dir).spec_path == project_dir / "spec.json"


def test_hf_id_is_accepted(project_dir):
    spec = load_spec(_write(project_dir / "spec.json", _v1(sam2="facebook/sam2.1-hiera-tiny")))
    assert spec.sam2 == "facebook/sam2.1-hiera-tiny"


def test_save_roundtrip_stores_relative_paths_inside(project_dir, tmp_path):
    outside = tmp_path / "elsewhere" / "imgs"
    spec = Spec(
        root=project_dir,
        csv=project_dir / "meta.csv",
        primary_key="pk",
        img_path="{Dataset}/{Image_name}.jpg",
        image_root=outside,
        group_by=["Dataset", "View"],
        checkpoint=project_dir / "ck" / "m.pt",
        name="Beetles",
    )
    path = project_dir / "spec.json"
    save_spec(spec, path)
    stored = json.loads(path.read_text())
    assert stored["version"] == 1
    assert stored["root"] == "." and stored["csv"] == "meta.csv"
    assert stored["checkpoint"] == "ck/m.pt"
    assert stored["image_root"] == str(outside)  # outside the spec's folder: absolute
    assert stored["name"] == "Beetles"
    again = load_spec(path)
    assert again.to_dict() == spec.to_dict()
    # No temp files left behind by the atomic write.
    assert not list(project_dir.glob(".*.tmp"))


def test_moving_the_project_folder_keeps_it_working(project_dir, tmp_path):
    _write(project_dir / "spec.json", _v1(image_root=None))
    moved = tmp_path / "moved"
    project_dir.rename(moved)
    spec = load_spec(moved / "spec.json")
    assert spec.csv == moved / "meta.csv" and spec.root == moved


def test_bad_json(project_dir):
    path = _write(project_dir / "spec.json", '{"version": 1, "csv": "meta.csv",}')
    with pytest.raises(SpecError, match=r"not valid JSON .*line 1") as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_not_an_object(project_dir):
    with pytest.raises(SpecError, match="JSON object"):
        load_spec(_write(project_dir / "spec.json", "[1, 2]"))


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.json")


def test_unknown_key_suggests_closest(project_dir):
    path = _write(project_dir / "spec.json", _v1(mask_mdoe="binary"))
    with pytest.raises(
        SpecError, match="unknown key 'mask_mdoe': did you mean 'mask_mode'"
    ) as info:
        load_spec(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("group_by", "Dataset", r"'group_by' must be a list of strings such as \[\"Dataset\"\]"),
        ("group_by", ["Dataset", 3], "'group_by' must be a list of strings"),
        ("image_size", "1024", "'image_size' must be an integer, not a string"),
        ("image_size", True, "'image_size' must be"),
        ("image_size", 1000, "multiple of 32"),
        ("image_size", 4096, "multiple of 32 from 256 to 2048"),
        ("primary_key", 3, "'primary_key' must be a string"),
        ("mask_mode", "binnary", "'mask_mode' is 'binnary' .did you mean 'binary'"),
        ("device", "gpu", "'device' is 'gpu': use one of auto, cuda, mps, cpu"),
        ("sam2", "sam3_huge", "'sam2'"),
        ("version", 2, "version 1"),
        ("primary_key", "", "'primary_key' is missing or empty"),
        ("group_by", ["Dataset", "Dataset"], "twice"),
    ],
)
def test_invalid_values(project_dir, key, value, expected):
    path = _write(project_dir / "spec.json", _v1(**{key: value}))
    with pytest.raises(SpecError, match=expected) as info:
        load_spec(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_csv(project_dir):
    path = _write(project_dir / "spec.json", _v1(csv="gone.csv"))
    with pytest.raises(SpecError, match=r"key 'csv': CSV file .*gone.csv does not exist"):
        load_spec(path)
    assert load_spec(path, check_csv=False).csv == project_dir / "gone.csv"


# ---------------------------------------------------------------------------------------------
# Original SST-GUI specs


def _legacy(root: Path, **overrides):
    data = {
        "root": str(root),
        "filter_query": "SELECT * FROM master_df",
        "group_by": ["Dataset"],
        "img_path": "path",
        "primary_key": "pk",
        "sam2": "facebook/sam2.1-hiera-large",
        "device": "cuda",
        "mask_mode": "original",
    }
    data.update(overrides)
    return data


@pytest.fixture
def legacy_root(tmp_path) -> Path:
    root = tmp_path / "sst_gui_project"
    rows = [(pk, ds, view, f"/data/{ds}/{name}.JPG") for pk, ds, view, name in ROWS]
    write_csv(root / "master.csv", rows, columns=["pk", "Dataset", "View", "path"])
    (root / "ref_masks").mkdir()
    (root / "pred_masks").mkdir()
    return root


def test_original_spec_is_mapped(legacy_root, tmp_path):
    path = _write(tmp_path / "spec.json", _legacy(legacy_root))
    spec = load_spec(path)
    assert spec.legacy
    assert spec.root == legacy_root and spec.csv == legacy_root / "master.csv"
    assert spec.ref_masks_dir == legacy_root / "ref_masks"
    assert spec.pred_masks_dir == legacy_root / "pred_masks"
    assert spec.img_path == "path" and spec.group_by == ["Dataset"]
    assert spec.sam2 == "facebook/sam2.1-hiera-large" and spec.device == "cuda"
    # Saving converts it to v1, with the same meaning.
    out = tmp_path / "converted.json"
    save_spec(spec, out)
    assert json.loads(out.read_text())["version"] == 1
    assert load_spec(out).csv == spec.csv


def test_original_spec_without_filter_query_and_relative_root(legacy_root, tmp_path):
    data = _legacy(legacy_root)
    del data["filter_query"]
    data["root"] = legacy_root.name
    spec = load_spec(_write(tmp_path / "spec.json", data))
    assert spec.legacy and spec.root == legacy_root


@pytest.mark.parametrize(
    "query",
    ["select *  from master_df;", "  SELECT * FROM master_df  ", "SELECT *\nFROM MASTER_DF"],
)
def test_trivial_filter_query_variants_are_accepted(legacy_root, tmp_path, query):
    assert load_spec(
        _write(tmp_path / "spec.json", _legacy(legacy_root, filter_query=query))
    ).legacy


def test_filter_query_with_where_is_kept_and_saved(legacy_root, tmp_path):
    query = "SELECT * FROM master_df WHERE View = 'dorsal'"
    spec = load_spec(_write(tmp_path / "spec.json", _legacy(legacy_root, filter_query=query)))
    assert spec.filter_query == query
    out = tmp_path / "saved.json"
    save_spec(spec, out)
    saved = json.loads(out.read_text())
    # The original SST-GUI requires filter_query; it still finds root, img_path and the rest.
    assert saved["filter_query"] == query and saved["img_path"] == "path"
    assert load_spec(out).filter_query == query


def test_filter_query_outside_the_whitelist_names_what_it_uses(legacy_root, tmp_path):
    query = "SELECT * FROM master_df WHERE View IN (SELECT v FROM read_csv('/etc/passwd'))"
    path = _write(tmp_path / "spec.json", _legacy(legacy_root, filter_query=query))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message and "uses a subquery" in message and "\n" not in message


def test_filter_query_that_is_not_a_row_filter(legacy_root, tmp_path):
    query = "SELECT pk FROM master_df"
    path = _write(tmp_path / "spec.json", _legacy(legacy_root, filter_query=query))
    with pytest.raises(SpecError, match="is not a plain row filter: write SELECT \\* FROM"):
        load_spec(path)


def test_sql_img_path_is_accepted_and_kept(legacy_root, tmp_path):
    sql = "'prefix/' || Dataset || '/' || View || '.JPG'"
    spec = load_spec(_write(tmp_path / "spec.json", _legacy(legacy_root, img_path=sql)))
    assert spec.img_path == sql
    out = tmp_path / "saved.json"
    save_spec(spec, out)
    assert json.loads(out.read_text())["img_path"] == sql


def test_sql_img_path_with_an_unknown_column(legacy_root, tmp_path):
    sql = "concat('x/', Folder, '.png')"
    path = _write(tmp_path / "spec.json", _legacy(legacy_root, img_path=sql))
    with pytest.raises(SpecError, match=r"key 'img_path': .*uses column 'Folder', which is not in"):
        load_spec(path)


def test_sql_img_path_outside_the_whitelist_names_the_function(legacy_root, tmp_path):
    path = _write(tmp_path / "spec.json", _legacy(legacy_root, img_path="md5(path) || '.jpg'"))
    with pytest.raises(SpecError, match=r"uses MD5, which SST Desktop does not evaluate"):
        load_spec(path)


def test_v1_spec_accepts_sql_img_path_and_filter(project_dir):
    data = _v1(
        img_path="'imgs/' || lower(Dataset) || '.png'",
        filter_query="SELECT * FROM master_df WHERE Dataset <> 'x'",
    )
    spec = load_spec(_write(project_dir / "spec.json", data))
    assert spec.img_path == data["img_path"] and spec.filter_query == data["filter_query"]
    bad = _v1(img_path="read_text('/etc/passwd')")
    with pytest.raises(SpecError, match="uses READ_TEXT, which SST Desktop does not evaluate"):
        load_spec(_write(project_dir / "spec.json", bad))


def test_img_path_not_a_column(legacy_root, tmp_path):
    path = _write(tmp_path / "spec.json", _legacy(legacy_root, img_path="filepath"))
    with pytest.raises(SpecError, match="not a column of"):
        load_spec(path)


def test_original_spec_with_missing_master_csv(tmp_path):
    (tmp_path / "empty").mkdir()
    path = _write(tmp_path / "spec.json", _legacy(tmp_path / "empty"))
    with pytest.raises(SpecError, match=r"key 'root': CSV file .*master.csv does not exist"):
        load_spec(path)
    path = _write(tmp_path / "spec.json", _legacy(tmp_path / "nowhere"))
    with pytest.raises(SpecError, match=r"key 'root': project folder .*nowhere does not exist"):
        load_spec(path)


def test_original_spec_unknown_key(legacy_root, tmp_path):
    path = _write(tmp_path / "spec.json", _legacy(legacy_root, filter_qeury="x"))
    with pytest.raises(SpecError, match="did you mean 'filter_query'"):
        load_spec(path)


def test_unreadable_spec_is_a_spec_error(project_dir, monkeypatch):
    path = _write(project_dir / "spec.json", _v1())

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(SpecError, match=r"spec\.json cannot be read \(Permission denied\)"):
        load_spec(path)
