//! [`Fixed`]: a static list of endpoints, the same for every service name.

use super::{Resolve, Update, Updates};
use crate::endpoint::Endpoint;
use futures_util::StreamExt as _;
use sinew_rpc::Status;
use sinew_transport::Address;

/// A resolver that answers every name with the same endpoints, once: for a
/// fixed set of replicas, tests, and addresses given on a command line.
///
/// ```
/// use sinew_cluster::resolve::Fixed;
/// let replicas = Fixed::parse(["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"]).unwrap();
/// assert_eq!(replicas.endpoints().len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Fixed {
    endpoints: Vec<Endpoint>,
}

impl Fixed {
    /// These endpoints (an address given twice counts once: the last wins).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<Endpoint>>) -> Fixed {
        let mut unique: Vec<Endpoint> = Vec::new();
        for endpoint in endpoints.into_iter().map(Into::into) {
            unique.retain(|kept| kept.address() != endpoint.address());
            unique.push(endpoint);
        }
        Fixed { endpoints: unique }
    }

    /// Endpoints at these addresses (`tcp://host:port`, `unix:///path`,
    /// `shm:///path`), or the first address that does not parse.
    pub fn parse<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Result<Fixed, Status> {
        let endpoints = addresses
            .into_iter()
            .map(|text| {
                text.parse::<Address>()
                    .map(Endpoint::new)
                    .map_err(|error| Status::invalid_argument(error.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fixed::new(endpoints))
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

impl Resolve for Fixed {
    fn resolve(&self, _service: &str) -> Updates {
        let update = Update::Reset(self.endpoints.clone());
        // One update, then a stream that stays open: the set never changes,
        // and an ended stream would read as "no more updates" anyway.
        Box::pin(futures_util::stream::iter([Ok(update)]).chain(futures_util::stream::pending()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn duplicates_count_once_and_bad_addresses_are_named() {
        let fixed = Fixed::parse([
            "tcp://127.0.0.1:1",
            "tcp://127.0.0.1:2",
            "tcp://127.0.0.1:1",
        ])
        .unwrap();
        let addresses: Vec<String> = fixed
            .endpoints()
            .iter()
            .map(|endpoint| endpoint.address().to_string())
            .collect();
        assert_eq!(addresses, ["tcp://127.0.0.1:2", "tcp://127.0.0.1:1"]);
        let error = Fixed::parse(["tcp://127.0.0.1:1", "nonsense"]).unwrap_err();
        assert!(error.message().contains("nonsense"), "{error}");
    }

    #[tokio::test]
    async fn resolves_every_name_to_the_whole_list_once() {
        let fixed = Fixed::parse(["tcp://127.0.0.1:1"]).unwrap();
        let mut updates = fixed.resolve("any.Service");
        let first = updates.next().await.unwrap().unwrap();
        assert_eq!(first, Update::Reset(fixed.endpoints().to_vec()));
        // Nothing more, and not the end of the stream either.
        assert!(futures_util::FutureExt::now_or_never(updates.next()).is_none());
    }
}
