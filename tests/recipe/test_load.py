from pathlib import Path

import pytest
from conftest import MINIMAL_RECIPE as MINIMAL

from umt_cli.errors import RecipeError, UsageError
from umt_cli.recipe import DistillRecipe, PrepareDataRecipe, apply_overrides, dump_resolved, load_recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.recipe.load import parse_override, validate_recipe


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(error: pytest.ExceptionInfo[RecipeError]) -> dict[str, str]:
    return {key: message for key, message, _ in error.value.problems}


def test_minimal_recipe_fills_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert isinstance(recipe, DistillRecipe)
    assert recipe.masking.mask_ratio == 0.8
    assert recipe.student.num_frames == 8
    assert recipe.augment.crop.kind == "multiscale_crop"


@pytest.mark.parametrize(
    ("token", "keys", "value"),
    [
        ("optim.lr=1e-4", ["optim", "lr"], 1e-4),
        ("a.b=true", ["a", "b"], True),
        ("a=[6, 7]", ["a"], [6, 7]),
        ("data.root=/some/path", ["data", "root"], "/some/path"),
        ("x='quoted'", ["x"], "quoted"),
        ("n=3", ["n"], 3),
    ],
)
def test_parse_override_values_are_toml_literals_else_strings(token, keys, value):
    assert parse_override(token) == (keys, value)


@pytest.mark.parametrize("token", ["noequals", "=3", "a..b=1", "~"])
def test_malformed_overrides_are_usage_errors(token):
    with pytest.raises(UsageError):
        parse_override(token)


def test_overrides_merge_before_validation_and_tilde_restores_default(tmp_path):
    table = {"data": {"batch_size": 8}, "student": {"num_frames": 4}}
    merged = apply_overrides(table, ["data.batch_size=2", "~student.num_frames", "masking.kind=tube"])
    assert merged == {"data": {"batch_size": 2}, "student": {}, "masking": {"kind": "tube"}}
    assert table["data"]["batch_size"] == 8  # the input is not mutated


def test_override_into_a_value_is_an_error():
    with pytest.raises(UsageError, match="is a value"):
        apply_overrides({"data": 3}, ["data.x=1"])


def test_three_problems_are_reported_with_their_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "\n[student]\nnum_frames = 'eight'\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path, ["data.batch_sizee=3", "masking.mask_ratio=1.5"])
    found = problems(error)
    assert set(found) == {"data.batch_sizee", "student.num_frames", "masking.mask_ratio"}
    assert "did you mean data.batch_size" in found["data.batch_sizee"]
    assert "integer" in found["student.num_frames"]
    assert "less than 1" in found["masking.mask_ratio"]
    text = str(error.value)
    assert "'eight'" in text and "1.5" in text  # the given values are shown


def test_unknown_key_far_from_any_field_lists_valid_keys(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["run.zzzzzz=1"])
    assert "valid keys here: seed, precision" in problems(error)["run.zzzzzz"]


def test_discriminated_union_errors_name_the_key_without_the_tag(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["loss.kind=smooth_l1", "loss.beta=0"])
    assert list(problems(error)) == ["loss.beta"]
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["loss.kind=huber"])
    assert "cosine" in problems(error)["loss"]


def test_registry_names_are_checked_under_their_own_key(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["masking.kind=gaussian", "teacher.arch=siglip", "student.preset=x"])
    found = problems(error)
    assert "unknown masking.kind 'gaussian'; valid: attention, tube, random" in found["masking.kind"]
    assert "valid: clip-b16, clip-l14, clip-tiny, clip-tiny14" in found["teacher.arch"]
    assert "valid: umt-tiny, umt-b16, umt-l16" in found["student.preset"]


def test_cross_field_geometry_checks_name_both_keys(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["student.num_frames=9", "student.tubelet=2", "student.img_size=100"])
    found = problems(error)
    assert "not a multiple of student.tubelet" in found["student.num_frames"]
    assert "100 is not a multiple of umt-b16's patch 16" in found["student.img_size"]


def test_stage_1_refuses_multi_frame_tubelets(tmp_path):
    with pytest.raises(RecipeError) as error:  # it used to pass the check and crash at the first step
        load_recipe(write(tmp_path, MINIMAL), ["student.tubelet=2"])
    assert "tubelet 1" in problems(error)["student.tubelet"]


def test_missing_required_key_and_missing_stage(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, "schema_version = 1\nstage = 'distill'\n"))
    assert problems(error) == {key: "missing required key" for key in ("data", "teacher", "masking")}
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, "schema_version = 1\n"))
    assert "stage" in problems(error)


@pytest.mark.parametrize(("version", "words"), [(0, "older"), (2, "newer")])
def test_schema_version_mismatch_is_explained(tmp_path, version, words):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL.replace("schema_version = 1", f"schema_version = {version}")))
    assert words in problems(error)["schema_version"]


def test_command_refuses_a_recipe_of_another_stage(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), expect=PrepareDataRecipe)
    assert "prepare-data" in problems(error)["stage"]


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(write(tmp_path, "stage = \n"))
    with pytest.raises(UsageError, match="not found"):
        load_recipe(tmp_path / "nope.toml")


def test_resolved_recipe_round_trips_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write(tmp_path, MINIMAL), ["decode.short_side=128", "augment.crop.kind=random_resized_crop"])
    dump_resolved(recipe, tmp_path / "resolved.toml")
    again = load_recipe(tmp_path / "resolved.toml")
    assert again.data.train_list == tmp_path / "train.csv"
    assert again.model_dump(exclude={"data"}) == recipe.model_dump(exclude={"data"})
    assert again.data.model_dump(exclude={"train_list", "root"}) == recipe.data.model_dump(
        exclude={"train_list", "root"}
    )


def test_recipes_are_frozen(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    with pytest.raises(Exception, match="frozen"):
        recipe.run.seed = 3  # type: ignore[misc]


def test_prepare_data_cross_field_error_names_the_table():
    with pytest.raises(RecipeError) as error:
        validate_recipe(
            {"schema_version": 1, "stage": "prepare-data", "source": {"kind": "synthetic", "width": 65}}, "<t>"
        )
    assert "even" in problems(error)["source"]


def test_teacher_grid_must_match_the_student_grid(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["teacher.arch=clip-l14", "teacher.input_size=224"])
    assert "use 196" in problems(error)["teacher.input_size"]
    recipe = load_recipe(write(tmp_path, MINIMAL), ["teacher.arch=clip-l14"])  # the preset runs at 196 px
    assert recipe.teacher.input_size is None


def test_preset_limits(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["student.preset=umt-tiny", "student.align_layers=5"])
    assert "depth 4" in problems(error)["student.align_layers"]
    with pytest.raises(RecipeError) as error:  # the preset fixes the patch size: the key is gone
        load_recipe(write(tmp_path, MINIMAL), ["student.patch_size=16"])
    assert "unknown key" in problems(error)["student.patch_size"]


def test_restoring_an_unknown_key_is_an_error_with_a_close_match(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL), ["~data.batch_sise", "~zzz.y"])
    assert "did you mean data.batch_size" in problems(error)["data.batch_sise"]
    assert [key for key, _, _ in error.value.problems] == ["data.batch_sise", "zzz"]  # each reported once


def test_restoring_a_key_the_chosen_variant_lacks_is_an_error(tmp_path):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, MINIMAL + '\n[sampling]\nkind = "sparse"\n'), ["~sampling.stride"])
    assert "valid keys here: kind, short_video" in problems(error)["sampling.stride"]


def test_restoring_a_key_of_an_absent_table_keeps_that_tables_defaults(tmp_path):
    # MINIMAL has no [sampling]: restoring one of its keys must not leave an empty table without its `kind`
    recipe = load_recipe(write(tmp_path, MINIMAL), ["~sampling.short_video", "~data.batch_size"])
    assert recipe.sampling.kind == "sparse" and recipe.data.batch_size == 64


@pytest.mark.parametrize(
    "overrides",
    [
        ["run.seed=1", "run.seed=2"],
        ["run.seed=1", "~run.seed"],
        ['masking={kind = "tube"}', "masking.mask_ratio=0.5"],
        ["masking.mask_ratio=0.5", "~masking"],
    ],
)
def test_setting_a_key_twice_is_an_error(tmp_path, overrides):
    with pytest.raises(UsageError, match="is set twice") as error:
        load_recipe(write(tmp_path, MINIMAL), overrides)
    assert overrides[0] in str(error.value) and overrides[1] in str(error.value)


def test_a_recipe_that_cannot_be_read_is_a_usage_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "bad.toml").write_bytes(b'a = 1\nstage = "\xff"\n')
    with pytest.raises(UsageError, match=r"bad\.toml line 2: not UTF-8 text \(byte 0xff at column 10\)"):
        load_recipe(tmp_path / "bad.toml")
    with pytest.raises(UsageError, match="is a directory"):
        load_recipe(tmp_path)
    with pytest.raises(UsageError, match="is a directory"):
        resolve_recipe(tmp_path)
    locked = write(tmp_path, MINIMAL, "locked.toml")

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(UsageError, match="locked.toml: Permission denied"):
        load_recipe(locked)
