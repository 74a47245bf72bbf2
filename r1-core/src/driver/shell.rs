//! The `shell` driver (DESIGN §6). (Implemented by the drivers work.)

use super::{BoxFuture, DriverContext, DriverExit, DriverFactory, DriverSpec, SessionDriver};
use crate::error::Result;

/// Builds [`ShellDriver`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShellFactory;

impl DriverFactory for ShellFactory {
    fn create(&self, _spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        Ok(Box::new(ShellDriver))
    }
}

/// Runs each input as `sh -c <text>` in the workdir.
#[derive(Debug)]
pub struct ShellDriver;

impl SessionDriver for ShellDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        Box::pin(async move {
            let mut control = ctx.control;
            loop {
                if control.changed().await.is_err() {
                    return Ok(DriverExit::Stopped);
                }
                match *control.borrow() {
                    super::Control::Cancel => return Ok(DriverExit::Cancelled),
                    super::Control::Stop => return Ok(DriverExit::Stopped),
                    _ => {}
                }
            }
        })
    }
}
