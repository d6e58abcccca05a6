//! Test component: every `tick` panics, which traps the instance.

use conductor_sdk::prelude::*;

struct Trap;

impl Plugin for Trap {
    fn init() -> Result<Self> {
        Ok(Trap)
    }

    fn tick(&mut self) -> Result<()> {
        panic!("testing-trap: trapping on purpose");
    }
}

conductor_sdk::export_plugin!(Trap);
