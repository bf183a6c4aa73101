"""A spec's search space becomes a flat Ray Tune space, and configurations read back cleanly."""

from __future__ import annotations

import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

from lifelong.api import SearchSpace
from lifelong.trainers.data import DataError
from lifelong.trainers.space import mutations, param_space, relevant

pytestmark = pytest.mark.unit

IMAGE = (1, 8, 8)


def space(**fields: object) -> SearchSpace:
    return SearchSpace.model_validate(fields)


def test_the_default_space_searches_mlp_and_shared_hyperparameters() -> None:
    params = param_space(space(), IMAGE)

    assert params["family"] == "mlp"  # one family is a constant, not a choice
    assert isinstance(params["depth"], Integer)
    assert isinstance(params["width"].sampler, LogUniform)
    assert (params["width"].lower, params["width"].upper) == (32, 257)  # upper is exclusive
    assert isinstance(params["learning_rate"], Float)
    assert isinstance(params["learning_rate"].sampler, LogUniform)
    assert params["batch_size"].categories == [32, 64, 128]
    assert params["augmentation"] == "none"
    assert "stages" not in params


def test_cnn_is_offered_only_for_image_shaped_data() -> None:
    both = space(families=["mlp", "cnn"])

    with_images = param_space(both, IMAGE)
    tabular = param_space(both, None)

    assert with_images["family"].categories == ["mlp", "cnn"]
    assert {"stages", "channels", "kernel_size", "pooling", "skip"} <= set(with_images)
    assert tabular["family"] == "mlp"
    assert "channels" not in tabular


def test_a_cnn_only_space_on_tabular_data_is_a_permanent_error_naming_the_field() -> None:
    with pytest.raises(DataError, match=r"spec\.search\.space\.families"):
        param_space(space(families=["cnn"]), None)


def test_ranges_whose_ends_meet_become_constants() -> None:
    params = param_space(
        space(
            mlp={"depth": {"min": 2, "max": 2}, "dropout": {"min": 0.1, "max": 0.1}},
            optimizer=["sgd"],
        ),
        None,
    )

    assert params["depth"] == 2
    assert params["dropout"] == 0.1
    assert params["optimizer"] == "sgd"


def test_a_log_range_from_zero_is_refused_with_its_field_path() -> None:
    with pytest.raises(DataError, match=r"spec\.search\.space\.mlp\.width.*min >= 1"):
        param_space(space(mlp={"width": {"min": 0, "max": 64, "log": True}}), None)


def test_sampled_values_stay_within_the_spec_ranges() -> None:
    params = param_space(space(families=["mlp", "cnn"]), IMAGE)
    for _ in range(200):
        config = {
            k: v.sample() if isinstance(v, tune.search.sample.Domain) else v
            for k, v in params.items()
        }
        assert 1 <= config["depth"] <= 3
        assert 32 <= config["width"] <= 256
        assert 8 <= config["channels"] <= 32
        assert 1e-4 <= config["learning_rate"] <= 3e-2


def test_relevant_drops_the_other_familys_parameters() -> None:
    config = {
        "family": "cnn",
        "depth": 2,
        "width": 64,
        "stages": 2,
        "channels": 16,
        "learning_rate": 0.01,
        "batch_size": 64,
    }

    assert relevant(config) == {
        "family": "cnn",
        "stages": 2,
        "channels": 16,
        "learning_rate": 0.01,
        "batch_size": 64,
    }


def test_pbt_may_perturb_only_searched_training_hyperparameters() -> None:
    params = param_space(space(augmentation=["none", "noise"], batch_size=[64]), None)

    mutable = mutations(params)

    assert set(mutable) == {"learning_rate", "weight_decay", "augmentation"}
    assert isinstance(mutable["augmentation"], Categorical)
