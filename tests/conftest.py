import jax
import pytest

import hf_models

jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """`tiny_model(family) -> hf_models.TinyModel`, built, saved and converted once per session."""
    built = {}

    def get(family: str) -> hf_models.TinyModel:
        if family not in built:
            root = tmp_path_factory.mktemp(family)
            model = hf_models.save_hf_model(family, root / "hf")
            cfg, params = hf_models.convert_and_load(root / "hf", root / "ckpt")
            built[family] = hf_models.TinyModel(model, root / "hf", root / "ckpt", cfg, params)
        return built[family]

    return get


@pytest.fixture
def fp32_matmuls():
    """Full-precision fp32 matmuls for numeric comparisons (GPUs default to TF32)."""
    with jax.default_matmul_precision("highest"):
        yield


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where JAX has a GPU."""
    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
