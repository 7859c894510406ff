//! What the messaging tests share: a broker of each backend, the embedded
//! one in this process and the same served by a real sinew server on
//! loopback, reached by the remote client.

#![allow(dead_code)]

use sinew_messaging::{Broker, BrokerBuilder, Message, Subscription};
use std::time::Duration;

/// How long a test waits for something that should come.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Embedded,
    Remote,
}

/// A broker built by `builder`, as `backend` has it; the server of a
/// remote one runs until the test's runtime ends.
pub(crate) async fn broker_with(backend: Backend, builder: BrokerBuilder) -> Broker {
    let broker = builder.build().expect("the broker opens");
    match backend {
        Backend::Embedded => broker,
        Backend::Remote => {
            let server = sinew_rpc::Server::builder()
                .add_service(broker.service())
                .bind(["tcp://127.0.0.1:0"])
                .await
                .expect("a server on loopback");
            let address = server.local_addresses()[0].to_string();
            tokio::spawn(server.serve());
            Broker::connect(&address).await.expect("the remote broker")
        }
    }
}

/// A broker with the default settings.
pub(crate) async fn broker(backend: Backend) -> Broker {
    broker_with(backend, Broker::builder()).await
}

/// The next message of `subscription`, which must come within [`WAIT`].
pub(crate) async fn next(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, subscription.next_message())
        .await
        .expect("a message in time")
        .expect("the subscription goes on")
}

/// Whether nothing comes to `subscription` within 50 ms.
pub(crate) async fn quiet(subscription: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(50), subscription.next_message())
        .await
        .is_err()
}

/// Runs each named `async fn(Backend)` on both backends, as tests named
/// `<name>::embedded` and `<name>::remote`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name($crate::common::Backend::Embedded).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn remote() {
                    super::$name($crate::common::Backend::Remote).await
                }
            }
        )*
    };
}
