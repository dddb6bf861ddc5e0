"""Write tests/data/dvs_sample.aedat4: a real AEDAT 4.0 recording (iniVation's own writer,
dv-processing) of the events ``expected_events()`` returns, for the CIFAR10-DVS reader's test.

Only the test's expectation (``expected_events``, numpy alone) is imported by the tests; writing
the file needs ``pip install dv-processing`` and is done once:

    python tests/data/make_aedat4_sample.py
"""
from pathlib import Path

import numpy as np

RESOLUTION = (128, 128)  # CIFAR10-DVS's sensor
N_EVENTS = 600


def expected_events() -> np.ndarray:
    """[N, 4] int64 rows (t in us, x, y, polarity), t increasing."""
    rng = np.random.default_rng(7)
    t = 1_000_000 + np.sort(rng.integers(0, 400_000, N_EVENTS))
    x = rng.integers(0, RESOLUTION[0], N_EVENTS)
    y = rng.integers(0, RESOLUTION[1], N_EVENTS)
    p = rng.integers(0, 2, N_EVENTS)
    return np.stack([t, x, y, p], axis=1).astype(np.int64)


def main() -> None:
    import dv_processing as dv

    out = Path(__file__).with_name("dvs_sample.aedat4")
    writer = dv.io.MonoCameraWriter(str(out), dv.io.MonoCameraWriter.EventOnlyConfig("DVS128_sample", RESOLUTION))
    store = dv.EventStore()
    for t, x, y, p in expected_events():
        store.push_back(int(t), int(x), int(y), bool(p))
    writer.writeEvents(store)
    del writer  # closes the file
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
