//! pest parse of `grammar/net.pest`, then a direct walk from pest pairs to the AST.

use super::ast::*;
use super::diagnostic::{Diagnostic, ErrorKind};
use super::source::{FileId, SourceMap, Span};
use pest::iterators::Pair;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/net.pest"]
struct NetParser;

/// Parses one file's text into a [`Module`]. Syntax errors point at the first token that does not fit.
pub fn parse(sources: &SourceMap, file: FileId) -> Result<Module, Diagnostic> {
    let text = &sources.file(file).text;
    if let Some(at) = too_deep_bracket(text) {
        let span = Span::new(file, at, at + 1);
        return Err(Diagnostic::new(
            ErrorKind::Syntax,
            format!("brackets nest deeper than {MAX_NESTING} levels"),
            Some(sources.locate(span)),
        ));
    }
    let mut pairs = NetParser::parse(Rule::file, text).map_err(|e| syntax_error(sources, file, e))?;
    let root = pairs.next().expect("pest returns the `file` rule on success");
    let walker = Walker { sources, file };
    let mut items = Vec::new();
    for pair in root.into_inner() {
        match pair.as_rule() {
            Rule::use_decl => {
                let start = walker.span(&pair).start as usize;
                let mut inner = pair.into_inner();
                let string = inner.next().expect("use has a path");
                let alias = inner.next().map(|a| walker.ident(a));
                // The pair's own span takes in the whitespace after the path (where `as` may follow).
                let end = alias.as_ref().map_or(string.as_span().end(), |a| a.span.end as usize);
                let span = Span::new(file, start, end);
                items.push(Item::Use { path: string_value(string), span, alias });
            }
            Rule::block_def => items.push(Item::Block(walker.block(pair)?)),
            Rule::network_def => items.push(Item::Network(walker.network(pair)?)),
            Rule::EOI => {}
            r => unreachable!("unexpected top-level rule {r:?}"),
        }
    }
    Ok(Module { items })
}

fn syntax_error(sources: &SourceMap, file: FileId, e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p + 1),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let text = &sources.file(file).text;
    let start = start.min(text.len());
    let end = end.min(text.len()).max(start);
    // Widen an empty or one-byte span to the whole offending token for a readable caret.
    let token_end = text[start..]
        .char_indices()
        .find(|&(i, c)| i > 0 && (c.is_whitespace() || !(c.is_alphanumeric() || c == '_')))
        .map_or(text.len(), |(i, _)| start + i);
    let found = match text[start..].chars().next() {
        None => "end of file".to_string(),
        Some(_) => format!("`{}`", &text[start..token_end.max(end)]),
    };
    let message = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut expected: Vec<&str> = positives.iter().filter_map(|r| describe(*r)).collect();
            expected.sort_unstable();
            expected.dedup();
            // pest reports rules, not literal tokens: when all it expected was an operator that could
            // continue an expression, the real problem is usually an unclosed bracket.
            let only_operators = positives.iter().all(|r| is_continuation(*r));
            match (only_operators, innermost_open_bracket(&text[..start])) {
                (true, Some((open, at))) => {
                    let loc = sources.locate(Span::new(file, at, at + 1));
                    let close = match open {
                        '(' => ")",
                        '[' => "]",
                        _ => "}",
                    };
                    if open == '{' {
                        format!("expected the end of the statement or `{close}` (to close the `{open}` at {}:{}), found {found}", loc.line, loc.col)
                    } else {
                        format!(
                            "expected `,` or `{close}` (to close the `{open}` at {}:{}), found {found}",
                            loc.line, loc.col
                        )
                    }
                }
                (true, None) => format!("unexpected {found}"),
                _ => {
                    let expected: Vec<&str> = positives
                        .iter()
                        .filter(|r| !is_continuation(**r))
                        .filter_map(|r| describe(*r))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if expected.is_empty() {
                        format!("unexpected {found}")
                    } else {
                        format!("expected {}, found {found}", join_or(&expected))
                    }
                }
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let span = Span::new(file, start, token_end.max(end));
    let mut d = Diagnostic::new(ErrorKind::Syntax, message, Some(sources.locate(span)));
    let word = &text[start..token_end.max(end)];
    if KEYWORDS.contains(&word) && d.message.contains("expected a name") {
        d = d
            .with_primary_label(format!("`{word}` is a reserved word"))
            .with_help(format!("choose another name, such as `{word}_c`"));
    }
    d
}

/// The reserved words of the language (the grammar's `keyword` rule).
const KEYWORDS: &[&str] = &[
    "use",
    "block",
    "network",
    "for",
    "in",
    "as",
    "if",
    "else",
    "scope",
    "sequential",
    "train",
    "and",
    "or",
    "not",
    "true",
    "false",
];

/// Rules that would only continue an expression already complete (operators, postfixes).
fn is_continuation(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::pipe_op
            | Rule::or_op
            | Rule::and_op
            | Rule::cmp_op
            | Rule::range_op
            | Rule::add_op
            | Rule::mul_op
            | Rule::member
            | Rule::scope_ann
            | Rule::shape_assert
            | Rule::tuple_comma
    )
}

/// The deepest bracket nesting the parser accepts (the grammar is recursive; this bounds its stack).
pub const MAX_NESTING: usize = 64;

/// The brackets of `text` outside comments and strings, with their byte offsets.
fn brackets(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some((i, c)) = chars.next() {
            match c {
                '#' => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
                '"' => {
                    for (_, c) in chars.by_ref() {
                        if c == '"' || c == '\n' {
                            break;
                        }
                    }
                }
                '(' | '[' | '{' | ')' | ']' | '}' => return Some((i, c)),
                _ => {}
            }
        }
        None
    })
}

/// The offset of the first bracket that opens nesting level `MAX_NESTING + 1`, if any.
fn too_deep_bracket(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in brackets(text) {
        if matches!(c, '(' | '[' | '{') {
            depth += 1;
            if depth > MAX_NESTING {
                return Some(i);
            }
        } else {
            depth = depth.saturating_sub(1);
        }
    }
    None
}

/// The innermost bracket left open in `text` (comments and strings skipped), with its byte offset.
fn innermost_open_bracket(text: &str) -> Option<(char, usize)> {
    let mut stack = Vec::new();
    for (i, c) in brackets(text) {
        if matches!(c, '(' | '[' | '{') {
            stack.push((c, i));
        } else {
            stack.pop();
        }
    }
    stack.pop()
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Names of grammar rules as a user would call them; `None` hides internal rules from messages.
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::use_decl => "`use`",
        Rule::block_def => "`block`",
        Rule::network_def => "`network`",
        Rule::param => "a parameter",
        Rule::input_decl => "an input declaration `name: [c, h, w]`",
        Rule::shape_spec => "a shape `[...]`",
        Rule::shape_dim | Rule::wildcard => "a size",
        Rule::body => "`{`",
        Rule::assign | Rule::for_stmt | Rule::scope_stmt | Rule::seq_stmt | Rule::train_stmt => "a statement",
        Rule::expr_stmt | Rule::expr | Rule::or_expr | Rule::and_expr | Rule::not_expr | Rule::cmp_expr => {
            "an expression"
        }
        Rule::range_expr | Rule::add_expr | Rule::mul_expr | Rule::unary | Rule::postfix => "an expression",
        Rule::pattern | Rule::for_binding => "a name",
        Rule::for_scope => "`as`",
        Rule::pipe_op => "`|>`",
        Rule::stage => "a layer after `|>`",
        Rule::or_op => "`or`",
        Rule::and_op => "`and`",
        Rule::not_op => "`not`",
        Rule::cmp_op => "a comparison",
        Rule::range_op => "`..`",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*`, `/`, `//` or `%`",
        Rule::neg_op => "`-`",
        Rule::member => "`.`",
        Rule::scope_ann => "`@scope`",
        Rule::shape_assert => "`: [shape]`",
        Rule::if_expr => "`if`",
        Rule::call | Rule::callee => "a call",
        Rule::arg | Rule::named_arg => "an argument",
        Rule::paren | Rule::tuple_comma => "`(`",
        Rule::list => "`[`",
        Rule::scope_path
        | Rule::path_segment
        | Rule::segment_text
        | Rule::segment_quoted
        | Rule::segment_quoted_inner
        | Rule::segment_expr => "a scope name",
        Rule::ident | Rule::qualified => "a name",
        Rule::int => "an integer",
        Rule::float => "a number",
        Rule::bool => "`true` or `false`",
        Rule::string | Rule::string_inner => "a string",
        _ => return None,
    })
}

fn string_value(pair: Pair<Rule>) -> String {
    pair.into_inner().next().map(|p| p.as_str().to_string()).unwrap_or_default()
}

struct Walker<'a> {
    sources: &'a SourceMap,
    file: FileId,
}

type PResult<T> = Result<T, Diagnostic>;

impl Walker<'_> {
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(ErrorKind::Syntax, message, Some(self.sources.locate(span)))
    }

    fn block(&self, pair: Pair<Rule>) -> PResult<BlockDef> {
        let mut inner = pair.into_inner();
        let name = self.ident(inner.next().expect("block name"));
        let mut params = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::param => {
                    let mut pi = p.into_inner();
                    let name = self.ident(pi.next().expect("param name"));
                    let default = pi.next().map(|e| self.expr(e)).transpose()?;
                    params.push(Param { name, default });
                }
                Rule::body => body = Some(self.body(p)?),
                r => unreachable!("block: {r:?}"),
            }
        }
        Ok(BlockDef { name, params, body: body.expect("block body") })
    }

    fn network(&self, pair: Pair<Rule>) -> PResult<NetworkDef> {
        let mut inner = pair.into_inner();
        let name = self.ident(inner.next().expect("network name"));
        let mut inputs = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::input_decl => {
                    let mut pi = p.into_inner();
                    let name = self.ident(pi.next().expect("input name"));
                    let shape = self.shape_spec(pi.next().expect("input shape"))?;
                    inputs.push(InputDecl { name, shape });
                }
                Rule::body => body = Some(self.body(p)?),
                r => unreachable!("network: {r:?}"),
            }
        }
        Ok(NetworkDef { name, inputs, body: body.expect("network body") })
    }

    fn shape_spec(&self, pair: Pair<Rule>) -> PResult<ShapeSpec> {
        let span = self.span(&pair);
        let mut dims = Vec::new();
        for dim in pair.into_inner() {
            let d = dim.into_inner().next().expect("shape dim");
            dims.push(match d.as_rule() {
                Rule::wildcard => None,
                _ => Some(self.expr(d)?),
            });
        }
        Ok(ShapeSpec { dims, span })
    }

    fn body(&self, pair: Pair<Rule>) -> PResult<Body> {
        let span = self.span(&pair);
        let stmts: Vec<Stmt> = pair.into_inner().map(|s| self.stmt(s)).collect::<PResult<_>>()?;
        for s in &stmts {
            self.check_index_after_scope(s)?;
        }
        Ok(Body { stmts, span })
    }

    /// `@layer1[0]` is the statement `... @layer1` followed by the list `[0]` (statements need no
    /// separator): a list statement that starts right after a scope name is an index written the
    /// Python way, which this reports with the dotted spelling.
    fn check_index_after_scope(&self, stmt: &Stmt) -> PResult<()> {
        let Stmt::Expr(Expr { kind: ExprKind::List(items), span, .. }) = stmt else { return Ok(()) };
        let text = &self.sources.file(self.file).text;
        let before = &text[..span.start as usize];
        let path_start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '{' | '}')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        if path_start == 0 || !before[..path_start].ends_with('@') || path_start == before.len() {
            return Ok(());
        }
        let path = &before[path_start..];
        let index: Vec<String> = items
            .iter()
            .map(|e| match e.kind {
                ExprKind::Int(i) => i.to_string(),
                _ => format!("{{{}}}", self.sources.text(e.span)),
            })
            .collect();
        let fixed = format!("@{path}.{}", index.join("."));
        let at = Span::new(self.file, path_start - 1, span.start as usize);
        Err(self
            .error(*span, format!("`{}` cannot index a scope name", self.sources.text(*span)))
            .with_label(self.sources.locate(at), "this scope name")
            .with_help(format!("scope segments are joined with dots: write `{fixed}`")))
    }

    /// `@trunk_output.block1-0` (a torchvision key with a hyphen) would parse as a scope and then a
    /// subtraction or a new statement; a `-` right after a scope path, itself followed by a name or
    /// number, is that key: say how to write it.
    fn hyphen_after_scope(&self, span: Span) -> PResult<()> {
        let text = &self.sources.file(self.file).text;
        let (start, end) = (span.start as usize, span.end as usize);
        let Some(after) = text.get(end..).and_then(|t| t.strip_prefix('-')) else { return Ok(()) };
        let rest: String =
            after.chars().take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.')).collect();
        if rest.is_empty() || rest.starts_with('.') {
            return Ok(());
        }
        let path = &text[start..end];
        let (head, last) = path.rsplit_once('.').unwrap_or(("", path));
        let (first, tail) =
            rest.split_once('.').map_or((rest.as_str(), String::new()), |(f, t)| (f, format!(".{t}")));
        // A plain last segment is quoted whole; one with `{expr}` or quotes keeps them and gains a
        // quoted `-...` part (`@layer{i}"-0"`).
        let quoted = if last.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            format!("\"{last}-{first}\"{tail}")
        } else {
            format!("{last}\"-{first}\"{tail}")
        };
        let fixed = if head.is_empty() { quoted } else { format!("{head}.{quoted}") };
        let at = Span::new(self.file, start, end + 1 + rest.len());
        Err(self
            .error(
                at,
                format!(
                    "`{}` is not a scope name: `-` is not allowed in an unquoted segment",
                    self.sources.text(at)
                ),
            )
            .with_help(format!("quote a scope segment with a hyphen: `{fixed}`")))
    }

    fn stmt(&self, pair: Pair<Rule>) -> PResult<Stmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        Ok(match rule {
            Rule::assign => {
                let pattern = self.pattern(inner.next().expect("pattern"));
                let value = self.expr(inner.next().expect("value"))?;
                Stmt::Assign { pattern, value }
            }
            Rule::for_stmt => {
                let mut binding = inner.next().expect("for binding").into_inner();
                let first = binding.next().expect("binding");
                let (index, pattern) = match binding.next() {
                    Some(pattern) => (Some(self.ident(first)), self.pattern(pattern)),
                    None => (None, self.pattern(first)),
                };
                let iter = self.expr(inner.next().expect("iterable"))?;
                let mut scope = None;
                let mut body = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::for_scope => {
                            scope = Some(self.scope_path(p.into_inner().next().expect("path"))?)
                        }
                        Rule::body => body = Some(self.body(p)?),
                        r => unreachable!("for: {r:?}"),
                    }
                }
                Stmt::For { index, pattern, iter, scope, body: body.expect("for body"), span }
            }
            Rule::scope_stmt | Rule::seq_stmt => {
                let path = self.scope_path(inner.next().expect("scope path"))?;
                let body = self.body(inner.next().expect("scope body"))?;
                if rule == Rule::scope_stmt {
                    Stmt::Scope { path, body }
                } else {
                    Stmt::Sequential { path, body }
                }
            }
            Rule::train_stmt => Stmt::Train { body: self.body(inner.next().expect("train body"))?, span },
            Rule::expr_stmt => Stmt::Expr(self.expr(inner.next().expect("expression"))?),
            r => unreachable!("stmt: {r:?}"),
        })
    }

    fn pattern(&self, pair: Pair<Rule>) -> Pattern {
        let span = self.span(&pair);
        let mut inner = pair.into_inner().peekable();
        match inner.peek().map(|p| p.as_rule()) {
            Some(Rule::ident) => Pattern::Name(self.ident(inner.next().expect("ident"))),
            _ => Pattern::Tuple(inner.map(|p| self.pattern(p)).collect(), span),
        }
    }

    fn scope_path(&self, pair: Pair<Rule>) -> PResult<ScopePath> {
        let span = self.span(&pair);
        let mut segments = Vec::new();
        for seg in pair.into_inner() {
            let mut parts = Vec::new();
            for part in seg.into_inner() {
                match part.as_rule() {
                    Rule::segment_text => parts.push(SegmentPart::Text(part.as_str().to_string())),
                    Rule::segment_quoted => parts.push(SegmentPart::Quoted(
                        part.into_inner().next().map_or(String::new(), |p| p.as_str().to_string()),
                    )),
                    Rule::segment_expr => {
                        parts.push(SegmentPart::Expr(self.expr(part.into_inner().next().expect("expr"))?))
                    }
                    r => unreachable!("segment: {r:?}"),
                }
            }
            segments.push(parts);
        }
        self.hyphen_after_scope(span)?;
        Ok(ScopePath { segments, span })
    }

    fn check_depth(&self, e: &Expr) -> PResult<()> {
        if e.depth > MAX_EXPR_DEPTH {
            return Err(self.error(e.span, format!("expression nests deeper than {MAX_EXPR_DEPTH} levels")));
        }
        Ok(())
    }

    fn expr(&self, pair: Pair<Rule>) -> PResult<Expr> {
        let e = self.expr_unchecked(pair)?;
        self.check_depth(&e)?;
        Ok(e)
    }

    fn expr_unchecked(&self, pair: Pair<Rule>) -> PResult<Expr> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => {
                let mut inner = pair.into_inner();
                let mut acc = self.expr(inner.next().expect("pipeline head"))?;
                while let Some(op) = inner.next() {
                    debug_assert_eq!(op.as_rule(), Rule::pipe_op);
                    acc = self.stage(acc, inner.next().expect("stage"))?;
                    self.check_depth(&acc)?;
                }
                Ok(acc)
            }
            Rule::or_expr | Rule::and_expr | Rule::add_expr | Rule::mul_expr => {
                let mut inner = pair.into_inner();
                let mut acc = self.expr(inner.next().expect("operand"))?;
                while let Some(op) = inner.next() {
                    let rhs = self.expr(inner.next().expect("operand"))?;
                    let op = match op.as_str() {
                        "or" => BinOp::Or,
                        "and" => BinOp::And,
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        "//" => BinOp::FloorDiv,
                        "%" => BinOp::Rem,
                        o => unreachable!("binary operator {o}"),
                    };
                    let span = acc.span.to(rhs.span);
                    acc = Expr::new(ExprKind::Binary(op, Box::new(acc), Box::new(rhs)), span);
                    self.check_depth(&acc)?;
                }
                Ok(acc)
            }
            Rule::cmp_expr => {
                let mut inner = pair.into_inner();
                let lhs = self.expr(inner.next().expect("operand"))?;
                let Some(op) = inner.next() else { return Ok(lhs) };
                let rhs = self.expr(inner.next().expect("operand"))?;
                let op = match op.as_str() {
                    "==" => BinOp::Eq,
                    "!=" => BinOp::Ne,
                    "<" => BinOp::Lt,
                    "<=" => BinOp::Le,
                    ">" => BinOp::Gt,
                    ">=" => BinOp::Ge,
                    o => unreachable!("comparison {o}"),
                };
                Ok(Expr::new(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span))
            }
            Rule::range_expr => {
                let mut inner = pair.into_inner();
                let lhs = self.expr(inner.next().expect("operand"))?;
                if inner.next().is_none() {
                    return Ok(lhs);
                }
                let rhs = self.expr(inner.next().expect("operand"))?;
                Ok(Expr::new(ExprKind::Range(Box::new(lhs), Box::new(rhs)), span))
            }
            Rule::not_expr | Rule::unary => {
                let mut ops = Vec::new();
                let mut operand = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::not_op => ops.push(UnOp::Not),
                        Rule::neg_op => ops.push(UnOp::Neg),
                        _ => operand = Some(self.expr(p)?),
                    }
                }
                let mut acc = operand.expect("unary operand");
                for op in ops.into_iter().rev() {
                    acc = Expr::new(ExprKind::Unary(op, Box::new(acc)), span);
                    self.check_depth(&acc)?;
                }
                Ok(acc)
            }
            Rule::postfix => {
                let mut inner = pair.into_inner();
                let mut acc = self.expr(inner.next().expect("primary"))?;
                for op in inner {
                    acc = self.postfix(acc, op)?;
                    self.check_depth(&acc)?;
                }
                Ok(acc)
            }
            Rule::int => {
                let value = pair
                    .as_str()
                    .parse::<i64>()
                    .map_err(|_| self.error(span, format!("integer `{}` is too large", pair.as_str())))?;
                Ok(Expr::new(ExprKind::Int(value), span))
            }
            Rule::float => {
                let value: f64 = pair.as_str().parse().expect("grammar guarantees a float literal");
                if !value.is_finite() {
                    return Err(self.error(span, format!("number `{}` is too large", pair.as_str())));
                }
                Ok(Expr::new(ExprKind::Float(value), span))
            }
            Rule::bool => Ok(Expr::new(ExprKind::Bool(pair.as_str() == "true"), span)),
            Rule::string => Ok(Expr::new(ExprKind::Str(string_value(pair)), span)),
            Rule::ident => Ok(Expr::new(ExprKind::Name(pair.as_str().to_string()), span)),
            Rule::list => {
                let items = pair.into_inner().map(|p| self.expr(p)).collect::<PResult<_>>()?;
                Ok(Expr::new(ExprKind::List(items), span))
            }
            Rule::paren => {
                let mut inner = pair.into_inner();
                let first = self.expr(inner.next().expect("parenthesised expression"))?;
                match inner.next() {
                    None => Ok(first),
                    Some(_comma) => {
                        let mut items = vec![first];
                        for p in inner {
                            items.push(self.expr(p)?);
                        }
                        Ok(Expr::new(ExprKind::Tuple(items), span))
                    }
                }
            }
            Rule::if_expr => self.if_expr(pair),
            Rule::call => {
                let mut inner = pair.into_inner();
                let callee = self.ident(inner.next().expect("callee"));
                let args = inner.map(|a| self.arg(a)).collect::<PResult<_>>()?;
                Ok(Expr::new(ExprKind::Call { callee, args }, span))
            }
            r => unreachable!("expr: {r:?}"),
        }
    }

    fn if_expr(&self, pair: Pair<Rule>) -> PResult<Expr> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let cond = self.expr(inner.next().expect("condition"))?;
        let then = self.body(inner.next().expect("then body"))?;
        let otherwise = match inner.next() {
            None => None,
            Some(p) if p.as_rule() == Rule::if_expr => Some(Box::new(Else::If(self.if_expr(p)?))),
            Some(p) => Some(Box::new(Else::Body(self.body(p)?))),
        };
        Ok(Expr::new(ExprKind::If { cond: Box::new(cond), then, otherwise }, span))
    }

    fn arg(&self, pair: Pair<Rule>) -> PResult<Arg> {
        let inner = pair.into_inner().next().expect("argument");
        if inner.as_rule() == Rule::named_arg {
            let mut ni = inner.into_inner();
            let name = self.ident(ni.next().expect("arg name"));
            let value = self.expr(ni.next().expect("arg value"))?;
            Ok(Arg { name: Some(name), value })
        } else {
            Ok(Arg { name: None, value: self.expr(inner)? })
        }
    }

    fn postfix(&self, base: Expr, op: Pair<Rule>) -> PResult<Expr> {
        let span = base.span.to(self.span(&op));
        let kind = match op.as_rule() {
            Rule::member => {
                ExprKind::Member(Box::new(base), self.ident(op.into_inner().next().expect("field")))
            }
            Rule::scope_ann => {
                ExprKind::Scoped(Box::new(base), self.scope_path(op.into_inner().next().expect("path"))?)
            }
            Rule::shape_assert => ExprKind::AssertShape(
                Box::new(base),
                self.shape_spec(op.into_inner().next().expect("shape"))?,
            ),
            r => unreachable!("postfix: {r:?}"),
        };
        Ok(Expr::new(kind, span))
    }

    /// `value |> f(args) @scope : [shape]` becomes `f(value, args) @scope : [shape]`.
    fn stage(&self, piped: Expr, pair: Pair<Rule>) -> PResult<Expr> {
        let mut inner = pair.into_inner();
        let head = inner.next().expect("stage head");
        let head_span = self.span(&head);
        let (callee, mut args) = match head.as_rule() {
            Rule::call => {
                let mut ci = head.into_inner();
                let callee = self.ident(ci.next().expect("callee"));
                let args: Vec<Arg> = ci.map(|a| self.arg(a)).collect::<PResult<_>>()?;
                (callee, args)
            }
            Rule::ident | Rule::qualified => (self.ident(head), Vec::new()),
            r => unreachable!("stage: {r:?}"),
        };
        args.insert(0, Arg { name: None, value: piped });
        let mut acc = Expr::new(ExprKind::Call { callee, args }, head_span);
        for op in inner {
            acc = self.postfix(acc, op)?;
        }
        Ok(acc)
    }
}
