"""`umt recipe show --explain`: every key with its help, and every variant a `kind` could choose."""

import sys

from umt_cli.recipe.catalog import shipped_recipes
from umt_cli.recipe.load import read_toml, validate_recipe
from umt_cli.recipe.render import render_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def explain(name: str) -> str:
    path = shipped_recipes()[name]
    return render_toml(validate_recipe(read_toml(path), str(path)), explain=True)


def test_kind_lines_say_which_variants_exist():
    lines = explain("k710").splitlines()
    kind = lines.index('kind = "cosine"')
    assert lines[kind - 2].startswith("# Variant: one of cosine, mse, smooth_l1. This one: UTA loss `2 - 2 cos(")
    masker = lines.index('kind = "attention"')  # a registry's names: read from the registry
    assert lines[masker - 2].endswith("[one of attention, tube, random;") and lines[masker - 3].startswith("# Masker:")
    assert not [line for line in lines if line.startswith("#  [")]  # no help comment is empty


def test_the_other_variants_are_listed_with_their_keys_and_defaults():
    text = explain("k710")
    assert '# kind = "dense": stride = 4' in text
    assert '# kind = "interval": no other keys' in text
    assert '# kind = "smooth_l1": weight = 1.0, beta = 1.0' in text
    assert '# kind = "random_resized_crop": scale = [0.5, 1.0],' in text
    data = explain("data/synthetic")
    assert '# kind = "video-text": annotations = (required), root = ".", out = (required),' in data
    assert '# kind = "kinetics710": k400 = (unset),' in data


def test_defaults_are_shown_as_toml_and_the_backend_help_is_current():
    text = explain("k710")
    assert "[bool; default true]" in text and "default True" not in text
    assert "`auto` uses PyAV (faster here, see README) and falls back to decord; or name one." in " ".join(
        line.removeprefix("# ") for line in text.splitlines()
    )


def test_every_explained_recipe_lists_its_variants_and_is_still_the_same_valid_recipe():
    for name, path in shipped_recipes().items():
        text = explain(name)
        assert "# Other variants (set `kind` to switch)" in text, name
        recipe = validate_recipe(read_toml(path), str(path))
        assert validate_recipe(tomllib.loads(text), "<explained>") == recipe, name
