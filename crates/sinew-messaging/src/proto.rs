//! The broker service's messages and stubs, generated from
//! `proto/sinew/messaging/v1/broker.proto`, and their conversions to and
//! from the crate's own types. Everything that comes off the network is
//! checked here (subjects, headers), never trusted.

#![allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/sinew.messaging.v1.rs"));

use crate::broker::{SlowConsumer as Policy, SubscribeOptions};
use crate::error::Error;
use crate::subject::Subject;

impl From<crate::Message> for Message {
    fn from(message: crate::Message) -> Message {
        Message {
            subject: message.subject.as_str().to_owned(),
            reply: message
                .reply
                .map(|reply| reply.as_str().to_owned())
                .unwrap_or_default(),
            headers: headers_to_proto(message.headers),
            payload: message.payload,
        }
    }
}

impl Message {
    /// The message, its subject and reply subject checked.
    pub(crate) fn into_message(self) -> Result<crate::Message, Error> {
        let reply = match self.reply.as_str() {
            "" => None,
            reply => Some(Subject::new(reply)?),
        };
        Ok(crate::Message {
            subject: Subject::new(&self.subject)?,
            reply,
            headers: headers_from_proto(self.headers),
            payload: self.payload,
        })
    }
}

pub(crate) fn headers_to_proto(headers: Vec<(String, String)>) -> Vec<Header> {
    headers
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

pub(crate) fn headers_from_proto(headers: Vec<Header>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|header| (header.name, header.value))
        .collect()
}

impl From<Policy> for SlowConsumer {
    fn from(policy: Policy) -> SlowConsumer {
        match policy {
            Policy::Backpressure => SlowConsumer::Backpressure,
            Policy::DropOldest => SlowConsumer::DropOldest,
            Policy::Disconnect => SlowConsumer::Disconnect,
        }
    }
}

impl SubscribeRequest {
    /// The options asked for (an unknown policy is the default one).
    pub(crate) fn options(&self) -> SubscribeOptions {
        let policy = match SlowConsumer::try_from(self.slow_consumer) {
            Ok(SlowConsumer::DropOldest) => Policy::DropOldest,
            Ok(SlowConsumer::Disconnect) => Policy::Disconnect,
            _ => Policy::Backpressure,
        };
        let mut options = SubscribeOptions::default().slow_consumer(policy);
        if self.max_wait_ms > 0 {
            options = options.max_wait(std::time::Duration::from_millis(self.max_wait_ms));
        }
        match self.capacity {
            0 => options,
            capacity => options.capacity(capacity as usize),
        }
    }
}
