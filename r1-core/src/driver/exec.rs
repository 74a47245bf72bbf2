//! The `exec` driver (DESIGN §6). (Implemented by the drivers work.)

use super::{BoxFuture, DriverContext, DriverExit, DriverFactory, DriverSpec, SessionDriver};
use crate::error::{Error, Result};

/// Builds [`ExecDriver`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecFactory;

impl DriverFactory for ExecFactory {
    fn create(&self, spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        match &spec.command {
            Some(c) if !c.is_empty() => Ok(Box::new(ExecDriver)),
            _ => Err(Error::invalid_params(
                "the exec driver needs a non-empty `command` (argv array)",
            )),
        }
    }
}

/// Runs one long-lived child speaking the stdin/stdout protocol.
#[derive(Debug)]
pub struct ExecDriver;

impl SessionDriver for ExecDriver {
    fn run(self: Box<Self>, _ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        Box::pin(async move {
            Ok(DriverExit::Finished {
                ok: true,
                exit_code: Some(0),
                message: None,
            })
        })
    }
}
