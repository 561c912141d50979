//! `kind = "tcp"`: healthy when a TCP connection to the address is accepted.

use super::{connect_tcp, Failed, Progress};
use crate::config::TcpCheck;

/// Connect to `check.address`; success detail is "connected".
pub(super) async fn probe(check: &TcpCheck, progress: &Progress) -> Result<String, Failed> {
    let _stream = connect_tcp(check.address, progress).await?;
    Ok("connected".to_owned())
}
