//! Shared pieces of the benchmark binaries: timing and reading the PyTorch side's files.

use std::time::Instant;

/// Median of `reps` timings (milliseconds) of `f` after `warmup` untimed calls; `f` must block
/// until the device is done.
pub fn median_ms(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    median_ms_with_setup(warmup, reps, || (), |()| f())
}

/// [`median_ms`] of `timed(setup())`: `setup` runs untimed before each call (and must leave the
/// device idle), for steps that consume their inputs.
pub fn median_ms_with_setup<T>(
    warmup: usize,
    reps: usize,
    mut setup: impl FnMut() -> T,
    mut timed: impl FnMut(T),
) -> f64 {
    for _ in 0..warmup {
        timed(setup());
    }
    median(
        (0..reps)
            .map(|_| {
                let input = setup();
                let start = Instant::now();
                timed(input);
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
