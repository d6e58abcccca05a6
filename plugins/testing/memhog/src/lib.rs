//! Test component: every `tick` allocates 4 MiB more and keeps it, until the
//! host's memory limit stops the instance.

use std::hint::black_box;

use conductor_sdk::prelude::*;

const BLOCK: usize = 4 << 20;

struct Memhog {
    hoard: Vec<Vec<u8>>,
}

impl Plugin for Memhog {
    fn init() -> Result<Self> {
        Ok(Memhog { hoard: Vec::new() })
    }

    fn tick(&mut self) -> Result<()> {
        // Non-zero fill writes every page, unlike zeroed allocation.
        let block = vec![0xa5u8; BLOCK];
        self.hoard.push(black_box(block));
        Ok(())
    }
}

conductor_sdk::export_plugin!(Memhog);
