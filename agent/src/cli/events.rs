//! `allowgate events`: drop (or would-drop) events as they happen.

use std::{path::Path, process::ExitCode};

use anyhow::bail;

use crate::control::{
    client,
    protocol::{Request, Response},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per event.
    #[arg(long)]
    json: bool,
    /// The config whose `socket` names the daemon to ask.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
}

pub fn execute(args: Args, socket: &Path) -> anyhow::Result<ExitCode> {
    let mut conn = client::send(socket, &Request::Events, None)?;
    while let Some(response) = conn.next_response()? {
        match response {
            Response::Event(e) if args.json => println!("{}", serde_json::to_string(&e)?),
            Response::Event(e) => println!("{e}"),
            Response::Lagged { missed } => eprintln!("allowgate: {missed} events missed (reading too slowly)"),
            Response::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }
    bail!("the daemon closed the event stream (it stopped or restarted)")
}
