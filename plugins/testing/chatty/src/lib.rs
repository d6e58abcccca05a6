//! Test component: every `tick` logs 4,000 lines, half through the `log`
//! interface and half to stdout, as a plugin logging in a tight loop would.

use conductor_sdk::prelude::*;

const LINES_PER_TICK: u32 = 4000;

struct Chatty {
    ticks: u64,
}

impl Plugin for Chatty {
    fn init() -> Result<Self> {
        Ok(Chatty { ticks: 0 })
    }

    fn tick(&mut self) -> Result<()> {
        self.ticks += 1;
        for i in 0..LINES_PER_TICK / 2 {
            conductor_sdk::info!("chatty tick {} line {i}", self.ticks);
            println!("chatty stdout tick {} line {i}", self.ticks);
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(Chatty);
