//! The Flight service as clients reach it: the handshake logs in, every other call is
//! checked for a valid token (or basic credentials) before the Flight SQL service sees it.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, SchemaResult, Ticket,
};
use futures::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::status::status;
use crate::audit::Actor;
use crate::server::auth::Authenticator;

/// Checks credentials, then hands the call to `inner`.
pub struct Guarded<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> Guarded<S> {
    /// `inner` behind `auth`.
    pub fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        Guarded { inner, auth }
    }

    /// Checks the call's credentials and records who makes it, for the service to find
    /// the caller's session; the call then runs as that user (for the audit log).
    async fn check<T>(&self, request: &mut Request<T>) -> Result<Actor, Status> {
        let caller = self
            .auth
            .caller(authorization(request))
            .await
            .map_err(|e| status(&e))?;
        let actor = caller.actor();
        request.extensions_mut().insert(caller);
        Ok(actor)
    }
}

/// The raw `authorization` header of a call.
fn authorization<T>(request: &Request<T>) -> Option<&[u8]> {
    request
        .metadata()
        .get("authorization")
        .map(|value| value.as_bytes())
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: FlightService> FlightService for Guarded<S> {
    type HandshakeStream = HandshakeStream;
    type ListFlightsStream = S::ListFlightsStream;
    type DoGetStream = S::DoGetStream;
    type DoPutStream = S::DoPutStream;
    type DoExchangeStream = S::DoExchangeStream;
    type DoActionStream = S::DoActionStream;
    type ListActionsStream = S::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let token = self
            .auth
            .login(authorization(&request))
            .await
            .map_err(|e| status(&e))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<HandshakeStream> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        // Clients such as ADBC read the token from this header.
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("cannot encode the token"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn list_flights(
        &self,
        mut request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.list_flights(request)).await
    }

    async fn get_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.get_flight_info(request)).await
    }

    async fn poll_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.poll_flight_info(request)).await
    }

    async fn get_schema(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.get_schema(request)).await
    }

    async fn do_get(
        &self,
        mut request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.do_get(request)).await
    }

    async fn do_put(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.do_put(request)).await
    }

    async fn do_exchange(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.do_exchange(request)).await
    }

    async fn do_action(
        &self,
        mut request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.do_action(request)).await
    }

    async fn list_actions(
        &self,
        mut request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actor = self.check(&mut request).await?;
        actor.scope(self.inner.list_actions(request)).await
    }
}
