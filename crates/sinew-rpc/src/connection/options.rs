//! The options both ends of a connection take from their builders: the limits
//! they announce in their preface, and keepalive.
//!
//! [`connection_options!`] writes the builder methods once for
//! [`ChannelBuilder`](crate::ChannelBuilder) and
//! [`ServerBuilder`](crate::ServerBuilder) (each has a `config` with
//! `settings` and `keepalive` fields): the same knobs, the same defaults, the
//! same documentation, from one place.

/// Writes the connection-option methods of a builder. `$received` names what
/// this side receives ("responses" or "requests").
macro_rules! connection_options {
    ($received:literal) => {
        #[doc = concat!("Largest frame, so largest message among the ", $received, ", accepted, in bytes (default 4 MiB, at least 16 KiB). A larger frame is a connection error.")]
        pub fn max_frame_size(mut self, bytes: u32) -> Self {
            self.config.settings.set_max_frame_size(bytes);
            self
        }

        #[doc = concat!("Flow-control window per call for ", $received, ", in bytes (default 1 MiB): how much a peer may send on one call before this side has taken it.")]
        pub fn initial_stream_window(mut self, bytes: u32) -> Self {
            self.config.settings.set_initial_stream_window(bytes);
            self
        }

        #[doc = concat!("Flow-control window per connection for ", $received, ", in bytes (default 8 MiB).")]
        pub fn initial_connection_window(mut self, bytes: u32) -> Self {
            self.config.settings.set_initial_connection_window(bytes);
            self
        }

        #[doc = concat!("Largest header list among the ", $received, " accepted, in bytes (default 16 KiB, at least 1 KiB): a HEADERS or TRAILERS frame's path, status and metadata together. A larger one is a connection error; the peer learns the limit from the preface and refuses to send more, with `RESOURCE_EXHAUSTED`.")]
        pub fn max_header_list_size(mut self, bytes: u32) -> Self {
            self.config.settings.set_max_header_list_size(bytes);
            self
        }

        /// Keepalive: PING after `interval` without a frame from the peer
        /// (`None` turns it off), and close the connection, failing its calls
        /// with `UNAVAILABLE`, if nothing arrives within `timeout` after. So a
        /// frozen or partitioned peer is found in seconds. Defaults:
        #[doc = "[`Keepalive::CLIENT`](crate::Keepalive::CLIENT) for channels (10 s, 5 s), [`Keepalive::SERVER`](crate::Keepalive::SERVER) for servers (30 s, 10 s)."]
        pub fn keepalive(mut self, interval: Option<std::time::Duration>, timeout: std::time::Duration) -> Self {
            self.config.keepalive = crate::Keepalive { interval, timeout };
            self
        }
    };
}

pub(crate) use connection_options;
