//! Azure OpenAI: the OpenAI wire format under `/openai/...` paths, where
//! the model is often named by the deployment in the path, not the body.

use serde_json::Value;

use super::{openai, Api, Provider, RequestInfo, ResponseDecoder};
use crate::http::RequestHead;

/// Azure OpenAI Service (`/openai/deployments/{name}/...`, `/openai/v1/...`).
pub(super) struct AzureOpenAi;

impl Provider for AzureOpenAi {
    fn name(&self) -> &'static str {
        "azure_openai"
    }

    fn claim(&self, head: &RequestHead) -> Option<Api> {
        let path = head.path();
        path.starts_with("/openai/")
            .then(|| openai::api_for_path(path))
            .flatten()
    }

    fn request(&self, api: Api, head: &RequestHead, body: Option<&Value>) -> Option<RequestInfo> {
        let mut info = openai::request(api, body)?;
        if info.model.is_none() {
            info.model = head
                .path()
                .strip_prefix("/openai/deployments/")
                .and_then(|rest| rest.split('/').next())
                .map(str::to_owned);
        }
        Some(info)
    }

    fn decoder(&self, api: Api) -> Box<dyn ResponseDecoder> {
        openai::decoder(api)
    }
}
