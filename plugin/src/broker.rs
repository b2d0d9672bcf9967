//! `plugin.GRPCBroker`: the host announces, on one long-lived stream, the address at which it
//! serves Storage and SystemView for each mount (one `service_id` per Setup).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::plugin::ConnInfo;
use crate::proto::plugin::grpc_broker_server::GrpcBroker;

/// What the host has announced so far, by service id.
#[derive(Clone)]
pub struct Broker {
    announced: watch::Sender<HashMap<u32, ConnInfo>>,
}

impl Broker {
    pub fn new() -> Self {
        Broker {
            announced: watch::Sender::new(HashMap::new()),
        }
    }

    /// Waits until the host has announced `id`. Setup and the announcement race (both orders
    /// were seen within a millisecond), so Setup waits here.
    pub async fn wait_for(&self, id: u32, timeout: Duration) -> Option<ConnInfo> {
        let mut rx = self.announced.subscribe();
        let found = tokio::time::timeout(timeout, rx.wait_for(|m| m.contains_key(&id))).await;
        match found {
            Ok(Ok(map)) => map.get(&id).cloned(),
            _ => None,
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
        let announced = self.0.announced.clone();
        // mayfly never sends on this stream; the sender lives as long as the inbound side, so
        // the outbound stream stays open for exactly the life of the host's.
        let (keep_open, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _keep_open = keep_open;
            while let Ok(Some(info)) = inbound.message().await {
                tracing::debug!(service_id = info.service_id, network = %info.network, "broker announced a service");
                announced.send_modify(|m| {
                    m.insert(info.service_id, info);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
