//! Counting the requests a run makes of its stores, so that `--json` and
//! the metrics file say what a night costs (issue 13): a decorator around
//! the `object_store` client that counts each call as one request of its
//! kind. A listing counts once however many pages it takes, a multipart
//! upload counts its creation and each part, and the client's own retries
//! of a request are not counted again (`retries` counts those).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// Requests of this process to every store it opened, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Requests {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    pub copy: u64,
}

static PUT: AtomicU64 = AtomicU64::new(0);
static GET: AtomicU64 = AtomicU64::new(0);
static HEAD: AtomicU64 = AtomicU64::new(0);
static LIST: AtomicU64 = AtomicU64::new(0);
static DELETE: AtomicU64 = AtomicU64::new(0);
static COPY: AtomicU64 = AtomicU64::new(0);

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every store of this process was asked so far.
pub fn run_requests() -> Requests {
    let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Requests {
        put: v(&PUT),
        get: v(&GET),
        head: v(&HEAD),
        list: v(&LIST),
        delete: v(&DELETE),
        copy: v(&COPY),
    }
}

/// An `object_store` client whose calls are counted.
#[derive(Debug)]
pub struct Counted(pub Arc<dyn ObjectStore>);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[async_trait]
impl ObjectStore for Counted {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        count(&PUT);
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        count(&PUT);
        let inner = self.0.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountedUpload(inner)))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        count(if options.head { &HEAD } else { &GET });
        self.0.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        count(&GET);
        self.0.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.0
            .delete_stream(locations.inspect(|_| count(&DELETE)).boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        count(&LIST);
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        count(&LIST);
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        count(&LIST);
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        count(&COPY);
        self.0.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct CountedUpload(Box<dyn MultipartUpload>);

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        count(&PUT);
        self.0.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        count(&PUT);
        self.0.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        count(&DELETE);
        self.0.abort().await
    }
}
