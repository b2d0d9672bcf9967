//! `plugin.GRPCBroker`: how the plugin reaches the Storage and SystemView the host serves for
//! each mount (one `service_id` per Setup). The host keeps one long-lived stream open.
//!
//! In go-plugin's plain mode the host announces on it an address per service, which the plugin
//! dials. In the multiplexed mode (`mux.rs`) there are no addresses: the plugin sends a knock
//! for the service, waits for the host's acknowledgement, and then opens a stream of the
//! session, which the host hands to that service (go-plugin `grpc_broker.go`, `knock`,
//! `muxDial` and `listenForKnocks`).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::mux;
use crate::proto::plugin::ConnInfo;
use crate::proto::plugin::conn_info::Knock;
use crate::proto::plugin::grpc_broker_server::GrpcBroker;
use crate::transport::{self, Connect, Io};

/// How long a knock waits for its acknowledgement, as go-plugin's `knock` does.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The pause before knocking again after the host said it has no listener yet: go-plugin's host
/// registers the listener in a goroutine of its own, which may lose the race with Setup.
const KNOCK_RETRY: Duration = Duration::from_millis(50);

type Outbound = mpsc::Sender<Result<ConnInfo, Status>>;

enum Answer {
    Ack(Knock),
    Closed,
    Late,
}

#[derive(Clone)]
pub struct Broker(Arc<Shared>);

struct Shared {
    /// What the host has announced so far, by service id (plain mode).
    announced: watch::Sender<HashMap<u32, ConnInfo>>,
    /// The session, once the host has connected (multiplexed mode only).
    session: Option<Arc<OnceCell<mux::Session>>>,
    /// The sending half of the host's broker stream, while it is open.
    outbound: Mutex<Option<Outbound>>,
    /// The knock waiting for its acknowledgement, by service id.
    acks: Mutex<HashMap<u32, oneshot::Sender<Knock>>>,
    /// A knock and the stream that follows it go together: the host gives the next stream it
    /// accepts to the service it last acknowledged.
    dialing: tokio::sync::Mutex<()>,
}

impl Broker {
    /// A broker for go-plugin's plain mode, or for the multiplexed mode over the session in
    /// `session`.
    pub fn new(session: Option<Arc<OnceCell<mux::Session>>>) -> Self {
        Broker(Arc::new(Shared {
            announced: watch::Sender::new(HashMap::new()),
            session,
            outbound: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            dialing: tokio::sync::Mutex::new(()),
        }))
    }

    /// How to reach service `id`. In plain mode this waits up to `wait` for the host's
    /// announcement: Setup and the announcement race (both orders were seen within a
    /// millisecond).
    pub async fn connect(&self, id: u32, wait: Duration) -> Result<Connect, String> {
        if self.0.session.is_some() {
            let broker = self.clone();
            return Ok(Arc::new(move || {
                let broker = broker.clone();
                Box::pin(async move { broker.knock_and_open(id, wait).await })
            }));
        }
        let mut rx = self.0.announced.subscribe();
        let found = tokio::time::timeout(wait, rx.wait_for(|m| m.contains_key(&id))).await;
        match found {
            Ok(Ok(map)) => {
                let info = &map[&id];
                Ok(transport::to_address(&info.network, &info.address))
            }
            _ => Err(format!(
                "the host did not announce broker service {id} within {}s",
                wait.as_secs()
            )),
        }
    }

    /// Knocks for service `id` until the host acknowledges it without error (or `wait` has
    /// passed), then opens the stream the host will hand to that service.
    async fn knock_and_open(&self, id: u32, wait: Duration) -> io::Result<Box<dyn Io>> {
        let session = self
            .0
            .session
            .as_ref()
            .and_then(|cell| cell.get())
            .ok_or_else(|| io::Error::other("the host has not opened its multiplexed session"))?
            .clone();
        let _dialing = self.0.dialing.lock().await;
        let deadline = Instant::now() + wait;
        loop {
            match self.knock(id).await? {
                None => break,
                Some(refusal) if Instant::now() + KNOCK_RETRY < deadline => {
                    tracing::debug!(service_id = id, %refusal, "knock refused; trying again");
                    tokio::time::sleep(KNOCK_RETRY).await;
                }
                Some(refusal) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("the host refused the knock for broker service {id}: {refusal}"),
                    ));
                }
            }
        }
        Ok(Box::new(session.open().await?))
    }

    /// One knock: `None` once acknowledged, or the host's refusal.
    async fn knock(&self, id: u32) -> io::Result<Option<String>> {
        let outbound = self.0.outbound.lock().unwrap().clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the host's broker stream is not open",
            )
        })?;
        let (tx, rx) = oneshot::channel();
        self.0.acks.lock().unwrap().insert(id, tx);
        let knock = ConnInfo {
            service_id: id,
            knock: Some(Knock {
                knock: true,
                ack: false,
                error: String::new(),
            }),
            ..ConnInfo::default()
        };
        let answer = if outbound.send(Ok(knock)).await.is_err() {
            Answer::Closed
        } else {
            match tokio::time::timeout(ACK_WAIT, rx).await {
                Ok(Ok(ack)) => Answer::Ack(ack),
                Ok(Err(_)) => Answer::Closed,
                Err(_) => Answer::Late,
            }
        };
        self.0.acks.lock().unwrap().remove(&id);
        match answer {
            Answer::Ack(ack) if ack.error.is_empty() => Ok(None),
            Answer::Ack(ack) => Ok(Some(ack.error)),
            Answer::Closed => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the host's broker stream closed before it acknowledged the knock",
            )),
            Answer::Late => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the host did not acknowledge the knock for broker service {id} within {}s",
                    ACK_WAIT.as_secs()
                ),
            )),
        }
    }

    /// One message from the host on the broker stream.
    fn received(&self, info: ConnInfo, outbound: &Outbound) {
        match info.knock {
            None => {
                tracing::debug!(service_id = info.service_id, network = %info.network,
                    "broker announced a service");
                self.0.announced.send_modify(|m| {
                    m.insert(info.service_id, info);
                });
            }
            Some(knock) if knock.ack => {
                match self.0.acks.lock().unwrap().remove(&info.service_id) {
                    Some(waiting) => {
                        let _ = waiting.send(knock);
                    }
                    None => tracing::warn!(
                        service_id = info.service_id,
                        "an acknowledgement for a knock nobody is waiting on"
                    ),
                }
            }
            // The host knocks on services the plugin brokers; mayfly brokers none, so it says
            // so at once rather than let the host wait out its timeout.
            Some(_) => {
                let refusal = ConnInfo {
                    service_id: info.service_id,
                    knock: Some(Knock {
                        knock: true,
                        ack: true,
                        error: format!("mayfly serves no broker service {}", info.service_id),
                    }),
                    ..ConnInfo::default()
                };
                let _ = outbound.try_send(Ok(refusal));
            }
        }
    }
}

pub struct BrokerService(pub Broker);

#[tonic::async_trait]
impl GrpcBroker for BrokerService {
    type StartStreamStream = ReceiverStream<Result<ConnInfo, Status>>;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let broker = self.0.clone();
        // The outbound side stays open exactly as long as the host's side: knocks go out on
        // it while it is.
        let (outbound, rx) = mpsc::channel(16);
        *broker.0.outbound.lock().unwrap() = Some(outbound.clone());
        tokio::spawn(async move {
            while let Ok(Some(info)) = inbound.message().await {
                broker.received(info, &outbound);
            }
            let mut current = broker.0.outbound.lock().unwrap();
            if current.as_ref().is_some_and(|c| c.same_channel(&outbound)) {
                *current = None;
                // Knocks sent on this stream will never be answered.
                broker.0.acks.lock().unwrap().clear();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
