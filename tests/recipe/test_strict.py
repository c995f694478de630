"""Recipes are as strict as the README says: wrong types, non-finite numbers and out-of-range values name their key."""

from pathlib import Path

import pytest
from conftest import MINIMAL_RECIPE as MINIMAL

from umt_cli.errors import RecipeError
from umt_cli.recipe import load_recipe
from umt_cli.recipe.load import validate_recipe


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(MINIMAL)
    return path


def problems(error: pytest.ExceptionInfo[RecipeError]) -> dict[str, str]:
    return {key: message for key, message, _ in error.value.problems}


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ('data.batch_size="64"', "data.batch_size", "valid integer"),  # a quoted override stays a string
        ("data.batch_size=2.0", "data.batch_size", "valid integer"),
        ("data.batch_size=true", "data.batch_size", "valid integer"),
        ('augment.flip="yes"', "augment.flip", "valid boolean"),
        ("augment.flip=1", "augment.flip", "valid boolean"),
        ('optim.lr="1e-4"', "optim.lr", "valid number"),
        ("optim.lr=true", "optim.lr", "valid number"),
        ('masking.mask_ratio="0.5"', "masking.mask_ratio", "valid number"),
        ("schema_version=1.0", "schema_version", "valid integer"),
        ("optim.lr=inf", "optim.lr", "finite"),
        ("optim.lr=nan", "optim.lr", "finite"),
        ("optim.eps=-inf", "optim.eps", "finite"),
        ("decode.sample_timeout_s=inf", "decode.sample_timeout_s", "finite"),
        ("student.drop_path=nan", "student.drop_path", "finite"),
        ("optim.betas=[1.5, 0.9]", "optim.betas[0]", "less than 1"),
        ("optim.betas=[0.9, 1.0]", "optim.betas[1]", "less than 1"),
        ("optim.betas=[-0.1, 0.9]", "optim.betas[0]", "greater than or equal to 0"),
        ('optim.betas=["0.9", 0.9]', "optim.betas[0]", "valid number"),
        ("optim.betas=[true, 0.9]", "optim.betas[0]", "valid number"),
        ("optim.betas=[0.9, inf]", "optim.betas[1]", "finite"),
        ("optim.betas=[0.9]", "optim.betas[1]", "too few items"),
        ("optim.betas=[0.9, 0.9, 0.9]", "optim.betas", "array should have at most 2 items"),
        ("optim.min_lr=1", "optim.min_lr", "exceeds optim.lr"),
        ("schedule.warmup_epochs=300", "schedule.warmup_epochs", "exceeds schedule.epochs"),
        ("run.seed=-1", "run.seed", "greater than or equal to 0"),
        ("run.seed=true", "run.seed", "valid integer"),
        ("augment.crop.scales=[]", "augment.crop.scales", "at least 1 item"),
        ("augment.crop.scales=[1.0, 1.5]", "augment.crop.scales[1]", "less than or equal to 1"),
        ('augment.crop.scales=["1"]', "augment.crop.scales[0]", "valid number"),
    ],
)
def test_wrong_types_and_ranges_name_their_key(recipe_file, override, key, words):
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe_file, [override, "augment.crop.kind=multiscale_crop"])
    found = problems(error)
    assert key in found, found
    assert words in found[key]


def test_paths_and_arrays_still_come_from_toml_strings_and_arrays(recipe_file):
    with pytest.raises(RecipeError) as error:  # strict items inside a lax tuple
        load_recipe(recipe_file, ['optim.betas=["0.9", 0.9]', "data.train_list=3"])
    assert set(problems(error)) == {"optim.betas[0]", "data.train_list"}
    recipe = load_recipe(
        recipe_file,
        ["optim.lr=1", "optim.betas=[0, 0.5]", "data.root=/some/path"],
    )
    assert recipe.optim.lr == 1.0 and isinstance(recipe.optim.lr, float)  # an int where a float is expected
    assert recipe.optim.betas == (0.0, 0.5)  # a TOML array is a tuple
    assert recipe.data.root == Path("/some/path")  # a TOML string is a path
    crop = load_recipe(recipe_file, ["augment.crop.kind=multiscale_crop", "augment.crop.scales=[1, 0.5]"])
    assert crop.augment.crop.scales == (1.0, 0.5)


@pytest.mark.parametrize(
    ("source", "key", "words"),
    [
        ({"kind": "synthetic", "seed": -1}, "source.seed", "greater than or equal to 0"),
        ({"kind": "synthetic", "train": "4"}, "source.train", "valid integer"),
        ({"kind": "kinetics710", "k400": {"videos": "v"}, "verify": "no"}, "source.verify", "valid boolean"),
        ({"kind": "video-text", "annotations": "a.json", "out": "o.json", "workers": 1.0}, "source.workers", "integer"),
        ({"kind": "video-text", "annotations": "a.json", "out": "o.json", "verify_timeout_s": float("nan")},
         "source.verify_timeout_s", "finite"),
    ],
)  # fmt: skip
def test_prepare_data_recipes_are_strict_too(source, key, words):
    with pytest.raises(RecipeError) as error:
        validate_recipe({"schema_version": 1, "stage": "prepare-data", "source": source}, "<t>")
    assert words in problems(error)[key]
