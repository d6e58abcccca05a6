//! Test component: `tick` never returns, so the host must interrupt it.

use std::hint::black_box;

use conductor_sdk::prelude::*;

struct Spin;

impl Plugin for Spin {
    fn init() -> Result<Self> {
        Ok(Spin)
    }

    fn tick(&mut self) -> Result<()> {
        let mut spins = 0u64;
        loop {
            // Opaque to the optimiser, so the loop cannot be removed.
            spins = black_box(spins.wrapping_add(1));
        }
    }
}

conductor_sdk::export_plugin!(Spin);
