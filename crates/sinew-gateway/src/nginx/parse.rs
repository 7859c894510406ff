//! nginx's syntax: the text of a configuration read into directives, as
//! nginx's `ngx_conf_read_token` reads it (words, quoted strings and their
//! escapes, comments, `;` and `{ }`), with the checks that make a text
//! nginx at all: a `;` forgotten, a block never closed, a block where none
//! can be.
//!
//! Not here: what a directive means, or whether the gateway has a
//! counterpart for it (`convert`); the values in its arguments (`units`).

use super::ImportError;

/// How deep blocks may nest: deeper is no configuration anyone writes, and
/// the parser recurses once per level.
const DEEPEST: usize = 64;

/// Directives that take a `{ }` block (`server` only outside `upstream`).
const BLOCK_DIRECTIVES: &[&str] = &[
    "http",
    "events",
    "server",
    "location",
    "upstream",
    "stream",
    "mail",
    "map",
    "geo",
    "if",
    "types",
    "limit_except",
    "split_clients",
];

/// Directives that end with `;` and never take a block.
const SIMPLE_DIRECTIVES: &[&str] = &[
    "listen",
    "server_name",
    "proxy_pass",
    "proxy_set_header",
    "proxy_hide_header",
    "add_header",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_http_version",
    "client_max_body_size",
    "client_header_timeout",
    "large_client_header_buffers",
    "limit_req",
    "limit_req_zone",
    "include",
    "keepalive",
    "keepalive_timeout",
    "keepalive_requests",
    "least_conn",
    "ip_hash",
    "random",
    "worker_processes",
    "worker_connections",
    "root",
    "return",
    "rewrite",
    "alias",
    "try_files",
    "access_log",
    "error_log",
];

/// Blocks whose entries are data rather than directives.
const DATA_BLOCKS: &[&str] = &["map", "geo", "types", "split_clients", "charset_map"];

#[derive(Debug)]
enum Token {
    Word { text: String, quoted: bool },
    Open,
    Close,
    End,
}

#[derive(Debug)]
struct Lexeme {
    token: Token,
    line: usize,
}

/// One directive: its name, arguments and block, if it has one.
#[derive(Debug)]
pub(super) struct Directive {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) line: usize,
    pub(super) block: Option<Vec<Directive>>,
}

/// nginx's escapes, in quoted strings and words alike; any other escaped
/// character keeps its backslash, as nginx keeps it.
fn unescape(escaped: char, word: &mut String) {
    match escaped {
        '"' | '\'' | '\\' => word.push(escaped),
        't' => word.push('\t'),
        'r' => word.push('\r'),
        'n' => word.push('\n'),
        other => {
            word.push('\\');
            word.push(other);
        }
    }
}

fn tokens(text: &str) -> Result<Vec<Lexeme>, ImportError> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexemes = Vec::new();
    let mut line = 1;
    let mut index = 0;
    while let Some(&c) = chars.get(index) {
        match c {
            '\n' => {
                line += 1;
                index += 1;
            }
            c if c.is_whitespace() => index += 1,
            '#' => {
                while chars.get(index).is_some_and(|&c| c != '\n') {
                    index += 1;
                }
            }
            '{' | '}' | ';' => {
                let token = match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    _ => Token::End,
                };
                lexemes.push(Lexeme { token, line });
                index += 1;
            }
            '"' | '\'' => {
                let opened = line;
                index += 1;
                let mut word = String::new();
                loop {
                    let Some(&ch) = chars.get(index) else {
                        return Err(ImportError::at(
                            opened,
                            format!("the string opened with {c} here is never closed"),
                        ));
                    };
                    index += 1;
                    if ch == c {
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    if ch == '\\' {
                        if let Some(&next) = chars.get(index) {
                            index += 1;
                            if next == '\n' {
                                line += 1;
                            }
                            unescape(next, &mut word);
                            continue;
                        }
                    }
                    word.push(ch);
                }
                // As nginx: a quoted string ends its token.
                if let Some(&next) = chars.get(index) {
                    if !(next.is_whitespace() || matches!(next, ';' | '{' | '}' | ')')) {
                        return Err(ImportError::at(
                            line,
                            format!("unexpected {next:?} right after a quoted string"),
                        ));
                    }
                }
                lexemes.push(Lexeme {
                    token: Token::Word {
                        text: word,
                        quoted: true,
                    },
                    line: opened,
                });
            }
            _ => {
                let start = line;
                let mut word = String::new();
                let mut after_dollar = false;
                while let Some(&ch) = chars.get(index) {
                    // `${name}` is a variable, not a block; and, as in
                    // nginx, a `}` inside a word is part of it.
                    if ch.is_whitespace() || ch == ';' || (ch == '{' && !after_dollar) {
                        break;
                    }
                    index += 1;
                    after_dollar = ch == '$';
                    if ch == '\\' {
                        if let Some(&next) = chars.get(index) {
                            index += 1;
                            if next == '\n' {
                                line += 1;
                            }
                            unescape(next, &mut word);
                            continue;
                        }
                    }
                    word.push(ch);
                }
                lexemes.push(Lexeme {
                    token: Token::Word {
                        text: word,
                        quoted: false,
                    },
                    line: start,
                });
            }
        }
    }
    Ok(lexemes)
}

pub(super) fn parse(text: &str) -> Result<Vec<Directive>, ImportError> {
    let mut lexemes = tokens(text)?.into_iter();
    block(&mut lexemes, None, 0)
}

/// A word of a directive: its text, line, and whether it was quoted.
type Word = (String, usize, bool);

/// The directives up to the `}` that closes `opened` (name and line of the
/// block), or to the end of the text at the top.
fn block(
    lexemes: &mut std::vec::IntoIter<Lexeme>,
    opened: Option<(&str, usize)>,
    depth: usize,
) -> Result<Vec<Directive>, ImportError> {
    let mut directives = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    loop {
        let Some(Lexeme { token, line }) = lexemes.next() else {
            if let Some((name, start, _)) = words.first() {
                return Err(ImportError::at(
                    *start,
                    format!("{name}: no ; at the end of the directive"),
                ));
            }
            if let Some((name, start)) = opened {
                return Err(ImportError::at(
                    start,
                    format!("the {name} block opened here is never closed (a }} is missing)"),
                ));
            }
            return Ok(directives);
        };
        match token {
            Token::Word { text, quoted } => words.push((text, line, quoted)),
            Token::End => {
                let taken = std::mem::take(&mut words);
                directives.push(directive(taken, None, opened, line)?);
            }
            Token::Open => {
                let Some((name, start, _)) = words.first() else {
                    return Err(ImportError::at(line, "a { with no directive before it"));
                };
                if depth >= DEEPEST {
                    return Err(ImportError::at(line, "blocks nested too deep"));
                }
                let inner = block(lexemes, Some((name.as_str(), *start)), depth + 1)?;
                let taken = std::mem::take(&mut words);
                directives.push(directive(taken, Some(inner), opened, line)?);
            }
            Token::Close => {
                if let Some((name, start, _)) = words.first() {
                    return Err(ImportError::at(
                        *start,
                        format!(
                            "{name}: no ; at the end of the directive (before the }} of line {line})"
                        ),
                    ));
                }
                return match opened {
                    Some(_) => Ok(directives),
                    None => Err(ImportError::at(line, "a } that closes no block")),
                };
            }
        }
    }
}

/// A directive of `words`, refused when it cannot be one.
fn directive(
    words: Vec<Word>,
    block: Option<Vec<Directive>>,
    parent: Option<(&str, usize)>,
    line: usize,
) -> Result<Directive, ImportError> {
    let mut words = words.into_iter();
    let Some((name, start, _)) = words.next() else {
        let what = if block.is_some() { "{" } else { ";" };
        return Err(ImportError::at(
            line,
            format!("a {what} with no directive before it"),
        ));
    };
    // A directive name at the start of a line, among the arguments of the
    // directive above, is nearly always a `;` forgotten at the end of that
    // one (nginx would say "invalid parameter" or worse).
    let data = parent.is_some_and(|(parent, _)| DATA_BLOCKS.contains(&parent));
    let mut args = Vec::new();
    let mut previous_line = start;
    for (text, word_line, quoted) in words {
        if !data && !quoted && word_line > previous_line && starts_directive(&text) {
            return Err(ImportError::at(
                start,
                format!(
                    "{name}: no ; at the end of the directive ({text} on line {word_line} starts the next one)"
                ),
            ));
        }
        previous_line = word_line;
        args.push(text);
    }
    Ok(Directive {
        name,
        args,
        line: start,
        block,
    })
}

fn starts_directive(word: &str) -> bool {
    BLOCK_DIRECTIVES.contains(&word) || SIMPLE_DIRECTIVES.contains(&word)
}

/// Refuses a directive in a shape nginx refuses: a block after one that
/// takes none (a `;` forgotten), none where one must be.
pub(super) fn shape(directive: &Directive, in_upstream: bool) -> Result<(), ImportError> {
    let name = directive.name.as_str();
    let wants_block = if name == "server" {
        !in_upstream
    } else {
        BLOCK_DIRECTIVES.contains(&name)
    };
    let takes_no_block = (name == "server" && in_upstream) || SIMPLE_DIRECTIVES.contains(&name);
    match &directive.block {
        None if wants_block => Err(ImportError::at(
            directive.line,
            format!("{name}: no {{ }} block after it"),
        )),
        Some(_) if takes_no_block => Err(ImportError::at(
            directive.line,
            format!("{name}: no ; at the end of the directive (a {{ block follows it)"),
        )),
        _ => Ok(()),
    }
}
