"""The two independent GPU oracles agree on Llama-3-8B's non-attention time on A100."""

import pytest

from hygen_pod.profiling.traces import default_data_dir

pytest.importorskip("aiconfigurator_core")
pytestmark = pytest.mark.oracle


def test_kernel_tables_agree_with_vidur_within_25_percent() -> None:
    if not (default_data_dir() / "vidur").is_dir():
        pytest.skip("shared data folder not present")
    from hygen_pod.profiling.oracle import KernelOracle
    from hygen_pod.profiling.vidur import VidurMLP

    aic, vidur = KernelOracle("a100"), VidurMLP()
    ratios = [aic.shared_ms(n) / vidur.forward_ms(n) for n in (1, 64, 512, 2048, 8192)]
    assert all(0.75 <= r <= 1.25 for r in ratios), ratios
    # More tokens never take less time in either table.
    assert vidur.forward_ms(4096) > vidur.forward_ms(1024) > vidur.forward_ms(16)


def test_missing_vidur_table_is_a_clear_error(tmp_path) -> None:
    from hygen_pod.profiling.vidur import VidurMLP

    with pytest.raises(FileNotFoundError, match="--data"):
        VidurMLP(data_dir=tmp_path)
