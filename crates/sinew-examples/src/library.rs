//! A library of books on shelves, with `google.api.http` annotations:
//! generated code plus [`LibraryService`].
//!
//! This is the service the HTTP gateway's JSON transcoding is tested and
//! demonstrated against. Its `.proto` (`proto/library.proto`) maps each method
//! to a REST-style route (`GET /v1/shelves/1/books/cosmos`, `PATCH` with a
//! field mask, `POST …:move`, a `response_body`, a server stream) and leaves
//! one method, `CountBooks`, without a rule. The implementation follows the
//! usual resource conventions of such APIs: names as paths
//! (`shelves/{shelf}/books/{book}`), page tokens, field masks, and a precise
//! status code for each failure (INVALID_ARGUMENT, NOT_FOUND,
//! ALREADY_EXISTS, RESOURCE_EXHAUSTED, DATA_LOSS for a lagging watcher).
//!
//! Not a catalogue to build on: the books live in memory and are gone at
//! exit, and every call takes one lock.
//!
//! ```no_run
//! use sinew::Server;
//! use sinew_examples::library::LibraryService;
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder()
//!     .add_service(LibraryService::with_sample_books().into_server())
//!     .bind(["tcp://127.0.0.1:7000"])
//!     .await?;
//! let _report = server.serve().await;
//! # Ok(())
//! # }
//! ```

#![allow(missing_docs)] // generated code; the .proto comments become its docs
include!(concat!(env!("OUT_DIR"), "/sinew.examples.library.rs"));

use futures_core::Stream;
use futures_util::StreamExt;
use library_server::{Library, LibraryServer};
use prost::Message;
use sinew::{Request, Response, Status};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Longest title, author or tag, in characters.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most tags on one book.
pub const MAX_TAGS: usize = 100;
/// Most books in the library; creating one more is `RESOURCE_EXHAUSTED`.
pub const MAX_BOOKS: usize = 100_000;
/// Longest shelf or book id, in characters (of `[a-z0-9-]`).
pub const MAX_ID_LEN: usize = 63;
/// Books in a page of `ListBooks` when the request asks for none in particular.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most books in a page of `ListBooks`; larger asks get this many.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Books a watcher may fall behind before it is ended with `DATA_LOSS`.
pub const WATCH_BUFFER: usize = 256;
/// Encoded bytes of books a watcher may fall behind before it is ended with
/// `DATA_LOSS`: a watcher that stops reading holds at most this much.
pub const WATCH_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// The fields of a book that `UpdateBook` changes, the paths its field mask
/// may name.
pub const MUTABLE_FIELDS: &[&str] = &["title", "author", "pages", "tags", "genre", "read"];
/// The shelf [`LibraryService::with_sample_books`] fills.
pub const SAMPLE_SHELF: &str = "shelves/1";

/// Books of a `WatchShelf` stream.
pub type BookStream = Pin<Box<dyn Stream<Item = Result<Book, Status>> + Send>>;

#[derive(Debug, Default)]
struct Data {
    /// Every book by name: a shelf's books are one range of the map, in the
    /// order `ListBooks` returns them. Shared with watch queues and
    /// snapshots, never changed in place.
    books: BTreeMap<String, Arc<Book>>,
    watchers: Vec<Watcher>,
}

/// The library's end of one watch: a bounded queue, in books and in bytes.
#[derive(Debug)]
struct Watcher {
    /// `{shelf}/books/`: the names of the books the watcher wants start so.
    prefix: String,
    /// A book with its encoded size.
    queue: mpsc::Sender<(Arc<Book>, usize)>,
    /// Encoded bytes of the books in the queue (the watch takes them off as
    /// it sends).
    queued_bytes: Arc<AtomicUsize>,
    /// Set when the watcher fell too far behind and was dropped.
    lagged: Arc<AtomicBool>,
}

impl Data {
    /// Queues `book` (created, changed or moved) for every watcher of its
    /// shelf. Called under the lock, so that watchers see changes in the
    /// order they were made. A watcher too far behind (its queue full, in
    /// books or bytes) is dropped and told so: the library never holds more
    /// for a watcher that does not read. Watchers that went away are
    /// dropped too.
    fn publish(&mut self, book: &Arc<Book>) {
        let size = book.encoded_len();
        self.watchers.retain(|watcher| {
            if !book.name.starts_with(&watcher.prefix) {
                return !watcher.queue.is_closed();
            }
            if watcher.queued_bytes.load(Ordering::Relaxed) + size > WATCH_BUFFER_BYTES {
                watcher.lagged.store(true, Ordering::Relaxed);
                return false;
            }
            match watcher.queue.try_send((book.clone(), size)) {
                Ok(()) => {
                    watcher.queued_bytes.fetch_add(size, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    watcher.lagged.store(true, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// The books of a shelf, by `{shelf}/books/` prefix, in name order,
    /// starting after `after` if given.
    fn shelf<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<Book>> + 'a {
        let start = match after {
            Some(name) => Bound::Excluded(name),
            None => Bound::Included(prefix),
        };
        self.books
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(_, book)| book)
    }
}

/// An in-memory implementation of the `Library` service. Clones share the
/// library.
///
/// [`Default`] makes an empty library; [`LibraryService::with_sample_books`]
/// one with a few books on [`SAMPLE_SHELF`], for demonstrations.
#[derive(Debug, Clone, Default)]
pub struct LibraryService {
    data: Arc<Mutex<Data>>,
}

/// Whether `id` is a valid shelf or book id: 1 to [`MAX_ID_LEN`] characters
/// of `[a-z0-9-]`.
fn is_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a shelf name, `shelves/{shelf}`, given in the request's `field`.
fn check_shelf(name: &str, field: &str) -> Result<(), Status> {
    match name.strip_prefix("shelves/") {
        Some(shelf) if is_id(shelf) => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "{field} must be a shelf name, shelves/{{shelf}} with a shelf id of 1 to \
             {MAX_ID_LEN} characters of [a-z0-9-], not {name:?}"
        ))),
    }
}

/// Splits a book name, `shelves/{shelf}/books/{book}`, given in the
/// request's `field`, into its shelf's name and the book's id.
fn parse_book_name<'a>(name: &'a str, field: &str) -> Result<(&'a str, &'a str), Status> {
    let parsed = name.strip_prefix("shelves/").and_then(|rest| {
        let (shelf, book) = rest.split_once("/books/")?;
        let shelf_name = &name[.."shelves/".len() + shelf.len()];
        (is_id(shelf) && is_id(book)).then_some((shelf_name, book))
    });
    parsed.ok_or_else(|| {
        Status::invalid_argument(format!(
            "{field} must be a book name, shelves/{{shelf}}/books/{{book}} with ids of 1 to \
             {MAX_ID_LEN} characters of [a-z0-9-], not {name:?}"
        ))
    })
}

/// Checks a book's fields against the library's bounds. Its name and
/// creation time are the server's, not checked here.
fn check_book(book: &Book) -> Result<(), Status> {
    if book.title.is_empty() {
        return Err(Status::invalid_argument("book.title is required"));
    }
    let too_long = |field: &str, text: &str| {
        let len = text.chars().count();
        (len > MAX_TEXT_LEN).then(|| {
            Status::invalid_argument(format!(
                "{field} of {len} characters is longer than {MAX_TEXT_LEN}"
            ))
        })
    };
    if let Some(error) = too_long("book.title", &book.title) {
        return Err(error);
    }
    if let Some(error) = too_long("book.author", &book.author) {
        return Err(error);
    }
    if book.tags.len() > MAX_TAGS {
        return Err(Status::invalid_argument(format!(
            "book has {} tags, more than {MAX_TAGS}",
            book.tags.len()
        )));
    }
    if let Some(error) = book.tags.iter().find_map(|tag| too_long("a tag", tag)) {
        return Err(error);
    }
    if book.pages < 0 {
        return Err(Status::invalid_argument(format!(
            "book.pages must not be negative, got {}",
            book.pages
        )));
    }
    check_genre(book.genre, "book.genre")?;
    Ok(())
}

/// The genre of a number from the wire, given in the request's `field`.
fn check_genre(genre: i32, field: &str) -> Result<Genre, Status> {
    Genre::try_from(genre)
        .map_err(|_| Status::invalid_argument(format!("{field} {genre} is not a known genre")))
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("no book named {name:?}"))
}

impl LibraryService {
    /// A library with three books on [`SAMPLE_SHELF`] (`shelves/1`), of
    /// different authors and genres, for demonstrations and tests:
    /// `shelves/1/books/cosmos`, `shelves/1/books/dispossessed` and
    /// `shelves/1/books/spqr`. Their creation times are fixed, so that
    /// answers about them are the same on every run.
    pub fn with_sample_books() -> Self {
        let book = |id: &str,
                    title: &str,
                    author: &str,
                    pages: i64,
                    tags: &[&str],
                    genre: Genre,
                    created: i64,
                    read: bool| Book {
            name: format!("{SAMPLE_SHELF}/books/{id}"),
            title: title.to_owned(),
            author: author.to_owned(),
            pages,
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            genre: genre as i32,
            create_time: Some(sinew::prost_types::Timestamp {
                seconds: created,
                nanos: 0,
            }),
            read,
        };
        let books = [
            book(
                "cosmos",
                "Cosmos",
                "Carl Sagan",
                365,
                &["astronomy", "classic"],
                Genre::Science,
                1_704_067_200, // 2024-01-01T00:00:00Z
                true,
            ),
            book(
                "dispossessed",
                "The Dispossessed",
                "Ursula K. Le Guin",
                387,
                &["classic", "science-fiction", "utopia"],
                Genre::Fiction,
                1_704_153_600, // 2024-01-02T00:00:00Z
                false,
            ),
            book(
                "spqr",
                "SPQR: A History of Ancient Rome",
                "Mary Beard",
                608,
                &["rome"],
                Genre::History,
                1_704_240_000, // 2024-01-03T00:00:00Z
                false,
            ),
        ];
        let data = Data {
            books: books
                .into_iter()
                .map(|book| (book.name.clone(), Arc::new(book)))
                .collect(),
            watchers: Vec::new(),
        };
        Self {
            data: Arc::new(Mutex::new(data)),
        }
    }

    /// This library as a service for a sinew server
    /// (`Server::builder().add_service(library.into_server())`).
    pub fn into_server(self) -> LibraryServer<Self> {
        LibraryServer::new(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, name: &str) -> Result<Book, Status> {
        parse_book_name(name, "name")?;
        match self.lock().books.get(name) {
            Some(book) => Ok(Book::clone(book)),
            None => Err(not_found(name)),
        }
    }
}

impl Library for LibraryService {
    type WatchShelfStream = BookStream;

    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        self.get(&request.into_inner().name).map(Response::new)
    }

    async fn list_books(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        let ListBooksRequest {
            parent,
            page_size,
            page_token,
            author,
            genre,
        } = request.into_inner();
        check_shelf(&parent, "parent")?;
        let page_size = match usize::try_from(page_size) {
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "page_size must not be negative, got {page_size}"
                )))
            }
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
        };
        let genre = check_genre(genre, "genre")?;
        let prefix = format!("{parent}/books/");
        let after = if page_token.is_empty() {
            None
        } else {
            match parse_book_name(&page_token, "page_token") {
                Ok((shelf, _)) if shelf == parent => Some(page_token.as_str()),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "page_token {page_token:?} is not one of ListBooks on {parent:?}"
                    )))
                }
            }
        };
        let wanted = |book: &&Arc<Book>| {
            (author.is_empty() || book.author == author)
                && (genre == Genre::Unspecified || book.genre == genre as i32)
        };
        let data = self.lock();
        let total = data.shelf(&prefix, None).filter(wanted).count();
        let mut rest = data.shelf(&prefix, after).filter(wanted);
        let books: Vec<Book> = rest
            .by_ref()
            .take(page_size)
            .map(|book| Book::clone(book))
            .collect();
        let next_page_token = match (rest.next(), books.last()) {
            (Some(_), Some(last)) => last.name.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListBooksResponse {
            books,
            next_page_token,
            total: total as i64,
        }))
    }

    async fn create_book(
        &self,
        request: Request<CreateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let CreateBookRequest {
            parent,
            book,
            book_id,
        } = request.into_inner();
        check_shelf(&parent, "parent")?;
        if !is_id(&book_id) {
            return Err(Status::invalid_argument(format!(
                "book_id must be 1 to {MAX_ID_LEN} characters of [a-z0-9-], not {book_id:?}"
            )));
        }
        let Some(mut book) = book else {
            return Err(Status::invalid_argument("book is required"));
        };
        check_book(&book)?;
        book.name = format!("{parent}/books/{book_id}");
        book.create_time = Some(std::time::SystemTime::now().into());
        let mut data = self.lock();
        if data.books.contains_key(&book.name) {
            return Err(Status::already_exists(format!(
                "there is a book named {:?} already",
                book.name
            )));
        }
        if data.books.len() >= MAX_BOOKS {
            return Err(Status::resource_exhausted(format!(
                "the library holds {MAX_BOOKS} books, as many as it can"
            )));
        }
        let book = Arc::new(book);
        data.books.insert(book.name.clone(), book.clone());
        data.publish(&book);
        Ok(Response::new(Book::clone(&book)))
    }

    async fn update_book(
        &self,
        request: Request<UpdateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let UpdateBookRequest { book, update_mask } = request.into_inner();
        let Some(update) = book else {
            return Err(Status::invalid_argument("book is required"));
        };
        parse_book_name(&update.name, "book.name")?;
        let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
        if let Some(path) = paths
            .iter()
            .find(|path| !MUTABLE_FIELDS.contains(&path.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "update_mask path {path:?} is not one of {}",
                MUTABLE_FIELDS.join(", ")
            )));
        }
        // An empty mask replaces every field a client may change.
        let changes = |field: &str| paths.is_empty() || paths.iter().any(|path| path == field);
        let mut data = self.lock();
        let Some(current) = data.books.get(&update.name) else {
            return Err(not_found(&update.name));
        };
        let mut book = Book::clone(current);
        if changes("title") {
            book.title = update.title;
        }
        if changes("author") {
            book.author = update.author;
        }
        if changes("pages") {
            book.pages = update.pages;
        }
        if changes("tags") {
            book.tags = update.tags;
        }
        if changes("genre") {
            book.genre = update.genre;
        }
        if changes("read") {
            book.read = update.read;
        }
        check_book(&book)?;
        let book = Arc::new(book);
        data.books.insert(book.name.clone(), book.clone());
        data.publish(&book);
        Ok(Response::new(Book::clone(&book)))
    }

    async fn delete_book(
        &self,
        request: Request<DeleteBookRequest>,
    ) -> Result<Response<()>, Status> {
        let name = request.into_inner().name;
        parse_book_name(&name, "name")?;
        match self.lock().books.remove(&name) {
            Some(_) => Ok(Response::new(())),
            None => Err(not_found(&name)),
        }
    }

    async fn move_book(&self, request: Request<MoveBookRequest>) -> Result<Response<Book>, Status> {
        let MoveBookRequest { name, other_shelf } = request.into_inner();
        let (_, id) = parse_book_name(&name, "name")?;
        check_shelf(&other_shelf, "other_shelf")?;
        let new_name = format!("{other_shelf}/books/{id}");
        let mut data = self.lock();
        let Some(current) = data.books.get(&name) else {
            return Err(not_found(&name));
        };
        if data.books.contains_key(&new_name) {
            return Err(Status::already_exists(format!(
                "there is a book named {new_name:?} already"
            )));
        }
        let mut book = Book::clone(current);
        data.books.remove(&name);
        book.name = new_name;
        let book = Arc::new(book);
        data.books.insert(book.name.clone(), book.clone());
        data.publish(&book);
        Ok(Response::new(Book::clone(&book)))
    }

    async fn get_book_title(
        &self,
        request: Request<GetBookRequest>,
    ) -> Result<Response<Book>, Status> {
        self.get(&request.into_inner().name).map(Response::new)
    }

    async fn watch_shelf(
        &self,
        request: Request<WatchShelfRequest>,
    ) -> Result<Response<Self::WatchShelfStream>, Status> {
        let parent = request.into_inner().parent;
        check_shelf(&parent, "parent")?;
        let prefix = format!("{parent}/books/");
        // Subscribe and snapshot under the same lock: no change is missed or
        // doubled. The snapshot shares the stored books.
        let (queue, receiver) = mpsc::channel(WATCH_BUFFER);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let lagged = Arc::new(AtomicBool::new(false));
        let current: Vec<Arc<Book>> = {
            let mut data = self.lock();
            data.watchers.push(Watcher {
                prefix: prefix.clone(),
                queue,
                queued_bytes: queued_bytes.clone(),
                lagged: lagged.clone(),
            });
            data.shelf(&prefix, None).cloned().collect()
        };
        let current = futures_util::stream::iter(current).map(|book| Ok(Book::clone(&book)));
        let state = Some((receiver, queued_bytes, lagged));
        let changes = futures_util::stream::unfold(state, |state| async move {
            let (mut receiver, queued_bytes, lagged) = state?;
            match receiver.recv().await {
                Some((book, size)) => {
                    queued_bytes.fetch_sub(size, Ordering::Relaxed);
                    let book = Book::clone(&book);
                    Some((Ok(book), Some((receiver, queued_bytes, lagged))))
                }
                // Dropped by the library: only for falling behind.
                None if lagged.load(Ordering::Relaxed) => Some((
                    Err(Status::data_loss(format!(
                        "watcher fell more than {WATCH_BUFFER} books or \
                         {WATCH_BUFFER_BYTES} bytes behind; watch again"
                    ))),
                    None,
                )),
                None => None,
            }
        });
        let books: BookStream = Box::pin(current.chain(changes));
        Ok(Response::new(books))
    }

    async fn count_books(
        &self,
        request: Request<CountBooksRequest>,
    ) -> Result<Response<CountBooksResponse>, Status> {
        let parent = request.into_inner().parent;
        check_shelf(&parent, "parent")?;
        let prefix = format!("{parent}/books/");
        let count = self.lock().shelf(&prefix, None).count();
        Ok(Response::new(CountBooksResponse {
            count: count as i64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::library_client::LibraryClient;
    use super::*;
    use sinew::prost_types::FieldMask;
    use sinew::{Channel, Code, Server};

    /// A book to create: the given title, every other field set too.
    fn book(title: &str, author: &str, genre: Genre) -> Book {
        Book {
            title: title.to_owned(),
            author: author.to_owned(),
            pages: 100,
            tags: vec!["tag".to_owned()],
            genre: genre as i32,
            read: false,
            ..Book::default()
        }
    }

    async fn create(library: &LibraryService, parent: &str, id: &str, book: Book) -> Book {
        library
            .create_book(Request::new(CreateBookRequest {
                parent: parent.to_owned(),
                book: Some(book),
                book_id: id.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn create_error(library: &LibraryService, parent: &str, id: &str, book: Book) -> Code {
        library
            .create_book(Request::new(CreateBookRequest {
                parent: parent.to_owned(),
                book: Some(book),
                book_id: id.to_owned(),
            }))
            .await
            .unwrap_err()
            .code()
    }

    async fn get(library: &LibraryService, name: &str) -> Result<Book, Status> {
        library
            .get_book(Request::new(GetBookRequest {
                name: name.to_owned(),
            }))
            .await
            .map(Response::into_inner)
    }

    async fn list(library: &LibraryService, request: ListBooksRequest) -> ListBooksResponse {
        library
            .list_books(Request::new(request))
            .await
            .unwrap()
            .into_inner()
    }

    fn names(books: &[Book]) -> Vec<&str> {
        books.iter().map(|book| book.name.as_str()).collect()
    }

    async fn update(library: &LibraryService, book: Book, paths: &[&str]) -> Result<Book, Status> {
        let update_mask = (!paths.is_empty()).then(|| FieldMask {
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        });
        library
            .update_book(Request::new(UpdateBookRequest {
                book: Some(book),
                update_mask,
            }))
            .await
            .map(Response::into_inner)
    }

    async fn move_to(library: &LibraryService, name: &str, shelf: &str) -> Result<Book, Status> {
        library
            .move_book(Request::new(MoveBookRequest {
                name: name.to_owned(),
                other_shelf: shelf.to_owned(),
            }))
            .await
            .map(Response::into_inner)
    }

    async fn watch(library: &LibraryService, parent: &str) -> BookStream {
        library
            .watch_shelf(Request::new(WatchShelfRequest {
                parent: parent.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn a_created_book_is_named_by_the_server_and_read_back() {
        let library = LibraryService::default();
        let mut asked = book("Dune", "Frank Herbert", Genre::Fiction);
        asked.name = "shelves/elsewhere/books/ignored".to_owned();
        let created = create(&library, "shelves/7", "dune", asked).await;
        assert_eq!(created.name, "shelves/7/books/dune");
        assert_eq!(created.title, "Dune");
        assert_eq!(created.genre, Genre::Fiction as i32);
        assert!(created.create_time.is_some());
        assert_eq!(
            get(&library, "shelves/7/books/dune").await.unwrap(),
            created
        );
        let by_title = library
            .get_book_title(Request::new(GetBookRequest {
                name: created.name.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_title, created);
    }

    #[tokio::test]
    async fn creating_checks_the_request_and_the_librarys_bounds() {
        let library = LibraryService::default();
        let fine = || book("Title", "Author", Genre::History);
        for parent in ["", "shelves/", "shelves/A", "shelf/1", "shelves/1/books"] {
            let code = create_error(&library, parent, "id", fine()).await;
            assert_eq!(code, Code::InvalidArgument, "parent {parent:?}");
        }
        let too_long_id = "a".repeat(MAX_ID_LEN + 1);
        for id in ["", "Upper", "under_score", "with/slash", &too_long_id] {
            let code = create_error(&library, "shelves/1", id, fine()).await;
            assert_eq!(code, Code::InvalidArgument, "book_id {id:?}");
        }
        let missing = library
            .create_book(Request::new(CreateBookRequest {
                parent: "shelves/1".to_owned(),
                book: None,
                book_id: "id".to_owned(),
            }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::InvalidArgument);
        let bad_books = [
            Book {
                title: String::new(),
                ..fine()
            },
            Book {
                title: "é".repeat(MAX_TEXT_LEN + 1),
                ..fine()
            },
            Book {
                author: "a".repeat(MAX_TEXT_LEN + 1),
                ..fine()
            },
            Book {
                tags: vec!["tag".to_owned(); MAX_TAGS + 1],
                ..fine()
            },
            Book {
                tags: vec!["t".repeat(MAX_TEXT_LEN + 1)],
                ..fine()
            },
            Book {
                pages: -1,
                ..fine()
            },
            Book {
                genre: 42,
                ..fine()
            },
        ];
        for bad in bad_books {
            let code = create_error(&library, "shelves/1", "id", bad.clone()).await;
            assert_eq!(code, Code::InvalidArgument, "{bad:?}");
        }
        // At the bounds exactly: accepted (characters, not bytes, count).
        let longest = Book {
            title: "é".repeat(MAX_TEXT_LEN),
            tags: vec!["tag".to_owned(); MAX_TAGS],
            ..fine()
        };
        create(&library, "shelves/1", &"a".repeat(MAX_ID_LEN), longest).await;

        create(&library, "shelves/1", "taken", fine()).await;
        let code = create_error(&library, "shelves/1", "taken", fine()).await;
        assert_eq!(code, Code::AlreadyExists);
        // The same id on another shelf is another book.
        create(&library, "shelves/2", "taken", fine()).await;
    }

    #[tokio::test]
    async fn a_full_library_refuses_more_books() {
        let library = LibraryService::default();
        {
            let shared = Arc::new(book("Filler", "", Genre::Unspecified));
            let mut data = library.lock();
            for index in 0..MAX_BOOKS {
                data.books
                    .insert(format!("shelves/full/books/{index}"), shared.clone());
            }
        }
        let fine = book("One more", "", Genre::Unspecified);
        let code = create_error(&library, "shelves/1", "extra", fine).await;
        assert_eq!(code, Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn getting_a_missing_or_malformed_name_fails() {
        let library = LibraryService::with_sample_books();
        assert!(get(&library, "shelves/1/books/cosmos").await.is_ok());
        let missing = get(&library, "shelves/1/books/missing").await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let on_other_shelf = get(&library, "shelves/2/books/cosmos").await.unwrap_err();
        assert_eq!(on_other_shelf.code(), Code::NotFound);
        for name in [
            "",
            "shelves/1",
            "shelves/1/books/",
            "shelves//books/cosmos",
            "shelves/1/books/cosmos/extra",
            "shelves/1/books/cosmos/books/x",
            "shelf/1/books/cosmos",
            "shelves/1/book/cosmos",
            "shelves/1/books/Cosmos",
        ] {
            let error = get(&library, name).await.unwrap_err();
            assert_eq!(error.code(), Code::InvalidArgument, "name {name:?}");
        }
    }

    #[tokio::test]
    async fn listing_pages_through_one_shelf_in_name_order() {
        let library = LibraryService::default();
        for id in ["g", "c", "a", "e", "b", "f", "d"] {
            create(&library, "shelves/2", id, book(id, "", Genre::Fiction)).await;
        }
        // Neighbours by name, not on the shelf: "shelves/20/…" sorts right
        // after "shelves/2/…", "shelves/1/…" right before.
        create(&library, "shelves/20", "a", book("a", "", Genre::Fiction)).await;
        create(&library, "shelves/1", "z", book("z", "", Genre::Fiction)).await;
        let first = ListBooksRequest {
            parent: "shelves/2".to_owned(),
            page_size: 3,
            ..ListBooksRequest::default()
        };
        let mut pages = Vec::new();
        let mut request = first.clone();
        loop {
            let page = list(&library, request.clone()).await;
            assert_eq!(page.total, 7);
            pages.push(names(&page.books).join(" "));
            if page.next_page_token.is_empty() {
                break;
            }
            assert_eq!(page.next_page_token, page.books.last().unwrap().name);
            request.page_token = page.next_page_token;
        }
        assert_eq!(
            pages,
            [
                "shelves/2/books/a shelves/2/books/b shelves/2/books/c",
                "shelves/2/books/d shelves/2/books/e shelves/2/books/f",
                "shelves/2/books/g",
            ]
        );
        // A page that ends exactly at the end has no next page.
        let exact = list(
            &library,
            ListBooksRequest {
                page_size: 7,
                ..first.clone()
            },
        )
        .await;
        assert_eq!(exact.books.len(), 7);
        assert!(exact.next_page_token.is_empty());
        // 0 asks for the default page size, a huge size gets the largest.
        for page_size in [0, i32::MAX] {
            let all = list(
                &library,
                ListBooksRequest {
                    page_size,
                    ..first.clone()
                },
            )
            .await;
            assert_eq!(all.books.len(), 7);
        }
        // A shelf with no books is an empty list, not an error.
        let empty = list(
            &library,
            ListBooksRequest {
                parent: "shelves/3".to_owned(),
                ..ListBooksRequest::default()
            },
        )
        .await;
        assert!(empty.books.is_empty() && empty.next_page_token.is_empty());
        assert_eq!(empty.total, 0);
    }

    #[tokio::test]
    async fn the_default_and_largest_page_sizes_hold() {
        let library = LibraryService::default();
        {
            let mut data = library.lock();
            for index in 0..MAX_PAGE_SIZE + 1 {
                let name = format!("shelves/1/books/{index:05}");
                let book = Book {
                    name: name.clone(),
                    ..book("Filler", "", Genre::Unspecified)
                };
                data.books.insert(name, Arc::new(book));
            }
        }
        let page = |page_size| ListBooksRequest {
            parent: "shelves/1".to_owned(),
            page_size,
            ..ListBooksRequest::default()
        };
        let default = list(&library, page(0)).await;
        assert_eq!(default.books.len(), DEFAULT_PAGE_SIZE);
        assert_eq!(default.next_page_token, "shelves/1/books/00049");
        let largest = list(&library, page(5000)).await;
        assert_eq!(largest.books.len(), MAX_PAGE_SIZE);
        assert_eq!(largest.total, MAX_PAGE_SIZE as i64 + 1);
    }

    #[tokio::test]
    async fn listing_filters_by_author_and_genre() {
        let library = LibraryService::with_sample_books();
        create(
            &library,
            SAMPLE_SHELF,
            "pale-blue-dot",
            book("Pale Blue Dot", "Carl Sagan", Genre::Science),
        )
        .await;
        create(
            &library,
            SAMPLE_SHELF,
            "contact",
            book("Contact", "Carl Sagan", Genre::Fiction),
        )
        .await;
        let filtered = |author: &str, genre: Genre, page_size| ListBooksRequest {
            parent: SAMPLE_SHELF.to_owned(),
            author: author.to_owned(),
            genre: genre as i32,
            page_size,
            ..ListBooksRequest::default()
        };
        let sagan = list(&library, filtered("Carl Sagan", Genre::Unspecified, 0)).await;
        assert_eq!(
            names(&sagan.books),
            [
                "shelves/1/books/contact",
                "shelves/1/books/cosmos",
                "shelves/1/books/pale-blue-dot"
            ]
        );
        assert_eq!(sagan.total, 3);
        let science = list(&library, filtered("", Genre::Science, 0)).await;
        assert_eq!(
            names(&science.books),
            ["shelves/1/books/cosmos", "shelves/1/books/pale-blue-dot"]
        );
        let both = list(&library, filtered("Carl Sagan", Genre::Fiction, 0)).await;
        assert_eq!(names(&both.books), ["shelves/1/books/contact"]);
        let nobody = list(&library, filtered("Nobody", Genre::Unspecified, 0)).await;
        assert!(nobody.books.is_empty());
        assert_eq!(nobody.total, 0);
        // Paging counts only the books that pass the filters.
        let first = list(&library, filtered("Carl Sagan", Genre::Unspecified, 2)).await;
        assert_eq!(first.books.len(), 2);
        assert_eq!(first.total, 3);
        let second = list(
            &library,
            ListBooksRequest {
                page_token: first.next_page_token,
                ..filtered("Carl Sagan", Genre::Unspecified, 2)
            },
        )
        .await;
        assert_eq!(names(&second.books), ["shelves/1/books/pale-blue-dot"]);
        assert!(second.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn listing_refuses_malformed_requests() {
        let library = LibraryService::with_sample_books();
        let fine = ListBooksRequest {
            parent: SAMPLE_SHELF.to_owned(),
            ..ListBooksRequest::default()
        };
        let bad = [
            ListBooksRequest {
                parent: "shelves/1/books".to_owned(),
                ..fine.clone()
            },
            ListBooksRequest {
                page_size: -1,
                ..fine.clone()
            },
            ListBooksRequest {
                genre: 9,
                ..fine.clone()
            },
            ListBooksRequest {
                page_token: "garbage".to_owned(),
                ..fine.clone()
            },
            // A token of another shelf's listing.
            ListBooksRequest {
                page_token: "shelves/2/books/cosmos".to_owned(),
                ..fine.clone()
            },
        ];
        for request in bad {
            let error = library
                .list_books(Request::new(request.clone()))
                .await
                .unwrap_err();
            assert_eq!(error.code(), Code::InvalidArgument, "{request:?}");
        }
    }

    #[tokio::test]
    async fn an_update_with_a_mask_changes_only_the_named_fields() {
        let library = LibraryService::with_sample_books();
        let before = get(&library, "shelves/1/books/cosmos").await.unwrap();
        let changes = Book {
            name: before.name.clone(),
            title: "Cosmos (illustrated)".to_owned(),
            read: false,
            ..Book::default()
        };
        let after = update(&library, changes, &["title", "read"]).await.unwrap();
        assert_eq!(
            after,
            Book {
                title: "Cosmos (illustrated)".to_owned(),
                read: false,
                ..before.clone()
            }
        );
        assert_eq!(get(&library, &before.name).await.unwrap(), after);
    }

    #[tokio::test]
    async fn an_update_without_a_mask_replaces_every_mutable_field() {
        let library = LibraryService::with_sample_books();
        let before = get(&library, "shelves/1/books/spqr").await.unwrap();
        let replacement = Book {
            name: before.name.clone(),
            title: "SPQR".to_owned(),
            // Not the client's to change: kept whatever the update says.
            create_time: None,
            ..Book::default()
        };
        let after = update(&library, replacement, &[]).await.unwrap();
        assert_eq!(
            after,
            Book {
                name: before.name.clone(),
                title: "SPQR".to_owned(),
                create_time: before.create_time,
                ..Book::default()
            }
        );
    }

    #[tokio::test]
    async fn updating_refuses_unknown_paths_missing_books_and_bad_values() {
        let library = LibraryService::with_sample_books();
        let cosmos = get(&library, "shelves/1/books/cosmos").await.unwrap();
        for path in ["name", "create_time", "bogus", ""] {
            let error = update(&library, cosmos.clone(), &[path]).await.unwrap_err();
            assert_eq!(error.code(), Code::InvalidArgument, "path {path:?}");
        }
        let missing = Book {
            name: "shelves/1/books/missing".to_owned(),
            ..cosmos.clone()
        };
        let error = update(&library, missing, &[]).await.unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
        let malformed = Book {
            name: "cosmos".to_owned(),
            ..cosmos.clone()
        };
        let error = update(&library, malformed, &[]).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        // The title stays required: an empty mask with no title clears it.
        let untitled = Book {
            title: String::new(),
            ..cosmos.clone()
        };
        let error = update(&library, untitled.clone(), &[]).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        // ... while a mask that leaves the title alone does not.
        update(&library, untitled, &["pages"]).await.unwrap();
        let too_many_tags = Book {
            tags: vec!["tag".to_owned(); MAX_TAGS + 1],
            ..cosmos.clone()
        };
        let error = update(&library, too_many_tags, &["tags"])
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        let no_book = library
            .update_book(Request::new(UpdateBookRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(no_book.code(), Code::InvalidArgument);
        // Nothing that failed changed the book.
        assert_eq!(get(&library, &cosmos.name).await.unwrap(), cosmos);
    }

    #[tokio::test]
    async fn a_deleted_book_is_gone() {
        let library = LibraryService::with_sample_books();
        let delete = |name: &str| {
            library.delete_book(Request::new(DeleteBookRequest {
                name: name.to_owned(),
            }))
        };
        delete("shelves/1/books/cosmos").await.unwrap();
        let gone = get(&library, "shelves/1/books/cosmos").await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        let again = delete("shelves/1/books/cosmos").await.unwrap_err();
        assert_eq!(again.code(), Code::NotFound);
        let malformed = delete("shelves/1").await.unwrap_err();
        assert_eq!(malformed.code(), Code::InvalidArgument);
        let count = library
            .count_books(Request::new(CountBooksRequest {
                parent: SAMPLE_SHELF.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner()
            .count;
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn a_moved_book_keeps_its_id_and_creation_time() {
        let library = LibraryService::with_sample_books();
        let before = get(&library, "shelves/1/books/spqr").await.unwrap();
        let moved = move_to(&library, &before.name, "shelves/history")
            .await
            .unwrap();
        assert_eq!(
            moved,
            Book {
                name: "shelves/history/books/spqr".to_owned(),
                ..before.clone()
            }
        );
        assert_eq!(get(&library, &moved.name).await.unwrap(), moved);
        let old = get(&library, &before.name).await.unwrap_err();
        assert_eq!(old.code(), Code::NotFound);
    }

    #[tokio::test]
    async fn moving_fails_onto_a_taken_name_a_missing_book_or_a_malformed_shelf() {
        let library = LibraryService::with_sample_books();
        create(
            &library,
            "shelves/2",
            "cosmos",
            book("Cosmos", "Carl Sagan", Genre::Science),
        )
        .await;
        let cases = [
            ("shelves/1/books/cosmos", "shelves/2", Code::AlreadyExists),
            // Its own shelf has a book of that id: itself.
            ("shelves/1/books/cosmos", "shelves/1", Code::AlreadyExists),
            ("shelves/1/books/missing", "shelves/3", Code::NotFound),
            ("shelves/1/books/cosmos", "3", Code::InvalidArgument),
            ("shelves/1/books/cosmos", "", Code::InvalidArgument),
            ("shelves/1/cosmos", "shelves/3", Code::InvalidArgument),
        ];
        for (name, shelf, code) in cases {
            let error = move_to(&library, name, shelf).await.unwrap_err();
            assert_eq!(error.code(), code, "{name} to {shelf:?}");
        }
        // Both books are where they were.
        assert!(get(&library, "shelves/1/books/cosmos").await.is_ok());
        assert!(get(&library, "shelves/2/books/cosmos").await.is_ok());
    }

    #[tokio::test]
    async fn counting_a_shelf_counts_only_its_books() {
        let library = LibraryService::with_sample_books();
        create(&library, "shelves/10", "x", book("X", "", Genre::Fiction)).await;
        let count = |parent: &str| {
            library.count_books(Request::new(CountBooksRequest {
                parent: parent.to_owned(),
            }))
        };
        assert_eq!(count("shelves/1").await.unwrap().into_inner().count, 3);
        assert_eq!(count("shelves/10").await.unwrap().into_inner().count, 1);
        assert_eq!(count("shelves/2").await.unwrap().into_inner().count, 0);
        let error = count("shelves").await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn the_sample_books_differ_in_author_and_genre() {
        let library = LibraryService::with_sample_books();
        let data = library.lock();
        let books: Vec<&Arc<Book>> = data.books.values().collect();
        assert_eq!(books.len(), 3);
        for (index, book) in books.iter().enumerate() {
            assert!(book.name.starts_with("shelves/1/books/"));
            assert!(check_book(book).is_ok(), "{book:?}");
            assert!(book.pages > 0 && !book.tags.is_empty());
            for other in &books[index + 1..] {
                assert_ne!(book.author, other.author);
                assert_ne!(book.genre, other.genre);
            }
        }
    }

    #[tokio::test]
    async fn a_watch_sends_the_shelf_then_its_changes() {
        let library = LibraryService::with_sample_books();
        let mut books = watch(&library, SAMPLE_SHELF).await;
        let mut current = Vec::new();
        for _ in 0..3 {
            current.push(books.next().await.unwrap().unwrap());
        }
        assert_eq!(
            names(&current),
            [
                "shelves/1/books/cosmos",
                "shelves/1/books/dispossessed",
                "shelves/1/books/spqr"
            ]
        );
        // Other shelves' changes, and deletions, are not sent.
        create(
            &library,
            "shelves/2",
            "elsewhere",
            book("E", "", Genre::Fiction),
        )
        .await;
        create(
            &library,
            "shelves/10",
            "near",
            book("N", "", Genre::Fiction),
        )
        .await;
        library
            .delete_book(Request::new(DeleteBookRequest {
                name: "shelves/1/books/spqr".to_owned(),
            }))
            .await
            .unwrap();
        let created = create(
            &library,
            SAMPLE_SHELF,
            "new",
            book("New", "", Genre::Fiction),
        )
        .await;
        let changes = Book {
            name: "shelves/1/books/cosmos".to_owned(),
            read: false,
            ..Book::default()
        };
        let updated = update(&library, changes, &["read"]).await.unwrap();
        let moved = move_to(&library, "shelves/2/books/elsewhere", SAMPLE_SHELF)
            .await
            .unwrap();
        assert_eq!(books.next().await.unwrap().unwrap(), created);
        assert_eq!(books.next().await.unwrap().unwrap(), updated);
        assert_eq!(books.next().await.unwrap().unwrap(), moved);
        // Nothing more until the next change.
        assert!(futures_util::FutureExt::now_or_never(books.next()).is_none());
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_ends_with_data_loss() {
        let library = LibraryService::with_sample_books();
        let mut books = watch(&library, SAMPLE_SHELF).await;
        for index in 0..=WATCH_BUFFER {
            let id = format!("b{index}");
            create(&library, SAMPLE_SHELF, &id, book("B", "", Genre::Fiction)).await;
        }
        // Dropped by the library, which holds nothing more for it.
        assert!(library.lock().watchers.is_empty());
        let mut received = 0;
        let error = loop {
            match books.next().await.unwrap() {
                Ok(_) => received += 1,
                Err(error) => break error,
            }
        };
        assert_eq!(error.code(), Code::DataLoss);
        // The three books there were, then as many changes as the queue held.
        assert_eq!(received, 3 + WATCH_BUFFER);
        assert!(books.next().await.is_none());
    }

    #[tokio::test]
    async fn a_watcher_that_holds_too_many_bytes_ends_with_data_loss() {
        let library = LibraryService::default();
        let mut books = watch(&library, "shelves/big").await;
        let big = Book {
            tags: vec!["t".repeat(MAX_TEXT_LEN); MAX_TAGS],
            ..book("Big", "", Genre::Fiction)
        };
        // The byte bound, well below the count bound for books this big,
        // drops the watcher first.
        assert!(WATCH_BUFFER_BYTES / big.encoded_len() < WATCH_BUFFER / 2);
        let mut created = 0;
        while !library.lock().watchers.is_empty() {
            assert!(created < WATCH_BUFFER / 2, "never dropped");
            let id = format!("b{created}");
            create(&library, "shelves/big", &id, big.clone()).await;
            created += 1;
        }
        let mut received = 0;
        let error = loop {
            match books.next().await.unwrap() {
                Ok(_) => received += 1,
                Err(error) => break error,
            }
        };
        assert_eq!(error.code(), Code::DataLoss);
        // Every book but the one that did not fit.
        assert_eq!(received, created - 1);
        assert!(received * big.encoded_len() <= WATCH_BUFFER_BYTES);
    }

    #[tokio::test]
    async fn a_watcher_that_went_away_is_forgotten() {
        let library = LibraryService::default();
        let books = watch(&library, "shelves/1").await;
        assert_eq!(library.lock().watchers.len(), 1);
        drop(books);
        // Forgotten at the next change, of any shelf.
        create(&library, "shelves/2", "x", book("X", "", Genre::Fiction)).await;
        assert!(library.lock().watchers.is_empty());
        let error = library
            .watch_shelf(Request::new(WatchShelfRequest {
                parent: "1".to_owned(),
            }))
            .await
            .err()
            .unwrap();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    /// The generated server and client, through an in-process sinew server.
    #[tokio::test]
    async fn the_service_answers_through_a_sinew_server() {
        let library = LibraryService::with_sample_books();
        let connector = Server::builder()
            .add_service(library.clone().into_server())
            .into_local_connector();
        let channel = Channel::builder_with_connector(connector)
            .connect()
            .await
            .unwrap();
        let client = LibraryClient::new(channel);
        let mut books = client
            .watch_shelf(WatchShelfRequest {
                parent: SAMPLE_SHELF.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        for _ in 0..3 {
            books.next().await.unwrap().unwrap();
        }
        let created = client
            .create_book(CreateBookRequest {
                parent: SAMPLE_SHELF.to_owned(),
                book: Some(book("Remote", "Someone", Genre::History)),
                book_id: "remote".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(books.next().await.unwrap().unwrap(), created);
        let fetched = client
            .get_book(GetBookRequest {
                name: created.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched, created);
        client
            .delete_book(DeleteBookRequest {
                name: created.name.clone(),
            })
            .await
            .unwrap();
        let error = client
            .get_book(GetBookRequest {
                name: created.name.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
        let count = client
            .count_books(CountBooksRequest {
                parent: SAMPLE_SHELF.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(count.count, 3);
    }

    /// The HTTP rules reach the embedded descriptors, which the gateway and
    /// server reflection read.
    #[test]
    fn the_embedded_descriptors_carry_the_http_rules() {
        use sinew_schema::http::{rule, HttpRule};
        let pool = sinew_schema::prost_reflect::DescriptorPool::decode(
            library_server::SERVICE_DESCRIPTOR.file_descriptor_set,
        )
        .unwrap();
        let service = pool
            .get_service_by_name("sinew.examples.library.Library")
            .unwrap();
        let rule_of = |name: &str| {
            let method = service.methods().find(|method| method.name() == name);
            rule(&method.unwrap())
        };
        let binding = |method: &str, path: &str, body: &str| HttpRule {
            method: method.to_owned(),
            path: path.to_owned(),
            body: body.to_owned(),
            ..HttpRule::default()
        };
        assert_eq!(
            rule_of("GetBook").unwrap(),
            HttpRule {
                additional_bindings: vec![binding("GET", "/v2/{name=shelves/*/books/*}", "")],
                ..binding("GET", "/v1/{name=shelves/*/books/*}", "")
            }
        );
        let expected = [
            (
                "ListBooks",
                binding("GET", "/v1/{parent=shelves/*}/books", ""),
            ),
            (
                "CreateBook",
                binding("POST", "/v1/{parent=shelves/*}/books", "book"),
            ),
            (
                "UpdateBook",
                binding("PATCH", "/v1/{book.name=shelves/*/books/*}", "book"),
            ),
            (
                "DeleteBook",
                binding("DELETE", "/v1/{name=shelves/*/books/*}", ""),
            ),
            (
                "MoveBook",
                binding("POST", "/v1/{name=shelves/*/books/*}:move", "*"),
            ),
            (
                "GetBookTitle",
                HttpRule {
                    response_body: "title".to_owned(),
                    ..binding("GET", "/v1/{name=shelves/*/books/*}/title", "")
                },
            ),
            (
                "WatchShelf",
                binding("GET", "/v1/{parent=shelves/*}/books:watch", ""),
            ),
        ];
        for (name, expected) in expected {
            assert_eq!(rule_of(name), Some(expected), "{name}");
        }
        assert_eq!(rule_of("CountBooks"), None);
    }
}
