//! A ticking simulation: a ball bouncing in a 20 × 10 box, one step per timer tick.
//!
//! Run it with `hotswap run ticker.wasm --tick 200`: each tick moves the ball and prints where it
//! is (through WASI stdout). Messages: `where` replies with the position and step count,
//! `kick` speeds the ball up.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

/// The world: the ball's position and velocity, and how many steps have run.
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct World {
    x: i32,
    y: i32,
    dx: i32,
    dy: i32,
    steps: u64,
    last_tick_ms: u64,
}

impl Default for World {
    fn default() -> Self {
        World {
            x: 0,
            y: 0,
            dx: 1,
            dy: 1,
            steps: 0,
            last_tick_ms: 0,
        }
    }
}

const WIDTH: i32 = 20;
const HEIGHT: i32 = 10;

impl App for World {
    fn start(&mut self) {
        println!("ticker: a ball in a {WIDTH}x{HEIGHT} box");
    }

    fn tick(&mut self, now_ms: u64) {
        // Bounce off the walls: reverse the velocity when the next step would leave the box.
        if !(0..=WIDTH).contains(&(self.x + self.dx)) {
            self.dx = -self.dx;
        }
        if !(0..=HEIGHT).contains(&(self.y + self.dy)) {
            self.dy = -self.dy;
        }
        self.x += self.dx;
        self.y += self.dy;
        self.steps += 1;
        self.last_tick_ms = now_ms;
        println!(
            "ticker: step {} ball at ({}, {})",
            self.steps, self.x, self.y
        );
    }

    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        match input {
            b"where" => format!(
                "ticker: the ball is at ({}, {}) after {} steps",
                self.x, self.y, self.steps
            ),
            b"kick" => {
                self.dx = self.dx.signum() * (self.dx.abs() + 1).min(WIDTH / 2);
                format!("ticker: speed {}", self.dx.abs())
            }
            _ => "error: expected where or kick".to_owned(),
        }
        .into_bytes()
    }
}

hotswap_guest::export_app!(World);
