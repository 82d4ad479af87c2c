import os

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def shared_weight_cache(tmp_path_factory):
    """One weight cache for the session's `reason` commands and app subprocesses (their REASON_HOMEs are
    per test): each model is packed once, then mapped, as a user's loads are."""
    folder = tmp_path_factory.mktemp("weight-cache")
    before = os.environ.get("REASON_WEIGHT_CACHE")
    os.environ["REASON_WEIGHT_CACHE"] = str(folder)
    yield folder
    if before is None:
        del os.environ["REASON_WEIGHT_CACHE"]
    else:
        os.environ["REASON_WEIGHT_CACHE"] = before
