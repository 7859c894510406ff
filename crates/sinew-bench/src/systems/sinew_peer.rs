//! sinew: the echo service of `sinew-examples`, over TCP or a Unix socket.

use crate::load::{closed_loop, Caller, Cell, Plan, Runtimes, Stats};
use sinew::Server;
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoService,
};

#[derive(Clone)]
struct SinewCaller {
    client: EchoClient,
    payload: String,
}

impl Caller for SinewCaller {
    async fn call(&self) -> anyhow::Result<()> {
        let reply = self
            .client
            .unary_echo(EchoRequest {
                message: self.payload.clone(),
            })
            .await?;
        anyhow::ensure!(
            reply.get_ref().message.len() == self.payload.len(),
            "short echo"
        );
        Ok(())
    }
}

pub(crate) fn run(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
    unix: bool,
) -> anyhow::Result<Stats> {
    let dir = std::env::temp_dir().join(format!("sinew-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let address = if unix {
        format!("unix://{}", dir.join("echo.sock").display())
    } else {
        "tcp://127.0.0.1:0".to_owned()
    };
    let server = runtimes.server.block_on(async {
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .bind([address])
            .await
    })?;
    let bound = server.local_addresses()[0].clone();
    let handle = server.handle();
    let serving = runtimes.server.spawn(server.serve());

    let client = runtimes.client.block_on(async {
        let channel = sinew::Channel::builder(bound).connect().await?;
        Ok::<_, sinew::Status>(EchoClient::new(channel))
    })?;
    let caller = SinewCaller {
        client,
        payload: super::payload(cell.payload),
    };
    let stats = closed_loop(
        &runtimes.client,
        caller,
        cell.concurrency,
        plan.warmup,
        plan.duration,
    );
    handle.shutdown();
    runtimes.server.block_on(serving)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(stats)
}
