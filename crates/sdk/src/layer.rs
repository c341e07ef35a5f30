//! The tower layer that puts the current token (and the User-Agent) on every request.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{
    HeaderValue, Request,
    header::{AUTHORIZATION, USER_AGENT},
};
use tower::{Layer, Service};

use crate::token::TokenFile;

#[derive(Debug, Clone)]
pub(crate) struct KubeSphereLayer {
    pub(crate) token: Arc<TokenFile>,
    pub(crate) user_agent: Option<HeaderValue>,
}

impl<S> Layer<S> for KubeSphereLayer {
    type Service = KubeSphereService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KubeSphereService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct KubeSphereService<S> {
    inner: S,
    layer: KubeSphereLayer,
}

// === impl KubeSphereService ===

impl<S, B> Service<Request<B>> for KubeSphereService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.layer.token.header());
        if let Some(user_agent) = &self.layer.user_agent
            && !headers.contains_key(USER_AGENT)
        {
            headers.insert(USER_AGENT, user_agent.clone());
        }
        self.inner.call(request)
    }
}
