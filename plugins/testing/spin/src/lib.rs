//! Test component: burns CPU in `tick`. Without config its `tick` never
//! returns, so the host must interrupt it; with config `spins: N` each
//! `tick` spins N times and returns, so many short calls add up to a
//! sustained CPU load (what `limits.cpu` bounds).

use std::hint::black_box;

use conductor_sdk::prelude::*;

struct Spin {
    spins: Option<u64>,
}

impl Plugin for Spin {
    fn init() -> Result<Self> {
        let spins = match config::get("spins") {
            Some(n) => Some(
                n.parse()
                    .map_err(|_| Error::msg(format!("config spins: {n:?} is not a count")))?,
            ),
            None => None,
        };
        Ok(Spin { spins })
    }

    fn tick(&mut self) -> Result<()> {
        let mut spins = 0u64;
        loop {
            // Opaque to the optimiser, so the loop cannot be removed.
            spins = black_box(spins.wrapping_add(1));
            if self.spins.is_some_and(|n| spins >= n) {
                return Ok(());
            }
        }
    }
}

conductor_sdk::export_plugin!(Spin);
