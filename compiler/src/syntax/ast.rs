//! The abstract syntax tree of a `.net` file. Every node keeps its span for diagnostics.

use super::source::Span;

#[derive(Debug, Clone)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone)]
pub enum Item {
    /// `use "file.net"`, or `use "file.net" as ns` (its blocks are then called `ns.name`).
    Use {
        path: String,
        span: Span,
        alias: Option<Ident>,
    },
    Block(BlockDef),
    Network(NetworkDef),
}

#[derive(Debug, Clone)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone)]
pub struct NetworkDef {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub struct InputDecl {
    pub name: Ident,
    pub shape: ShapeSpec,
}

/// `[3, 224, 224]`; `None` dims are `_` wildcards (allowed in assertions only).
#[derive(Debug, Clone)]
pub struct ShapeSpec {
    pub dims: Vec<Option<Expr>>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    Assign {
        pattern: Pattern,
        value: Expr,
    },
    For {
        index: Option<Ident>,
        pattern: Pattern,
        iter: Expr,
        scope: Option<ScopePath>,
        body: Body,
        span: Span,
    },
    Scope {
        path: ScopePath,
        body: Body,
    },
    Sequential {
        path: ScopePath,
        body: Body,
    },
    Train {
        body: Body,
        span: Span,
    },
    Expr(Expr),
}

#[derive(Debug, Clone)]
pub enum Pattern {
    Name(Ident),
    Tuple(Vec<Pattern>, Span),
}

impl Pattern {
    pub fn span(&self) -> Span {
        match self {
            Pattern::Name(id) => id.span,
            Pattern::Tuple(_, span) => *span,
        }
    }
}

/// A weight-scope path such as `layer{k + 1}.downsample.0`.
#[derive(Debug, Clone)]
pub struct ScopePath {
    pub segments: Vec<Vec<SegmentPart>>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum SegmentPart {
    Text(String),
    /// `"block1-0"`: text as written, any characters but `.`, spaces, quotes and backslashes.
    Quoted(String),
    Expr(Expr),
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    /// Height of this expression tree (a literal is 1), bodies of `if` included. The parser rejects
    /// expressions deeper than [`MAX_EXPR_DEPTH`] so that evaluating (and dropping) them cannot
    /// exhaust the stack.
    pub depth: u32,
}

/// The deepest expression the parser accepts.
pub const MAX_EXPR_DEPTH: u32 = 400;

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        let child = |e: &Expr| e.depth;
        let inner = match &kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Bool(_)
            | ExprKind::Str(_)
            | ExprKind::Name(_) => 0,
            ExprKind::List(items) | ExprKind::Tuple(items) => items.iter().map(child).max().unwrap_or(0),
            ExprKind::Unary(_, e) | ExprKind::Member(e, _) | ExprKind::AssertShape(e, _) => e.depth,
            ExprKind::Scoped(e, path) => e.depth.max(path.max_depth()),
            ExprKind::Binary(_, a, b) | ExprKind::Range(a, b) => a.depth.max(b.depth),
            ExprKind::Call { args, .. } => args.iter().map(|a| a.value.depth).max().unwrap_or(0),
            ExprKind::If { cond, then, otherwise } => {
                let other = match otherwise.as_deref() {
                    None => 0,
                    Some(Else::If(e)) => e.depth,
                    Some(Else::Body(b)) => b.max_depth(),
                };
                cond.depth.max(then.max_depth()).max(other)
            }
        };
        Expr { kind, span, depth: inner.saturating_add(1) }
    }
}

impl ScopePath {
    fn max_depth(&self) -> u32 {
        self.segments
            .iter()
            .flatten()
            .map(|p| match p {
                SegmentPart::Expr(e) => e.depth,
                SegmentPart::Text(_) | SegmentPart::Quoted(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

impl Body {
    /// The depth of the deepest expression among the statements (nested bodies included).
    pub fn max_depth(&self) -> u32 {
        self.stmts
            .iter()
            .map(|s| match s {
                Stmt::Assign { value, .. } => value.depth,
                Stmt::Expr(e) => e.depth,
                Stmt::For { iter, scope, body, .. } => {
                    iter.depth.max(body.max_depth()).max(scope.as_ref().map_or(0, |p| p.max_depth()))
                }
                Stmt::Scope { path, body } | Stmt::Sequential { path, body } => {
                    path.max_depth().max(body.max_depth())
                }
                Stmt::Train { body, .. } => body.max_depth(),
            })
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Debug, Clone)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(String),
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Range(Box<Expr>, Box<Expr>),
    If {
        cond: Box<Expr>,
        then: Body,
        otherwise: Option<Box<Else>>,
    },
    /// `f(args)`; for a pipeline stage `x |> f(args)` the piped value is the first argument.
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Member(Box<Expr>, Ident),
    Scoped(Box<Expr>, ScopePath),
    AssertShape(Box<Expr>, ShapeSpec),
}

#[derive(Debug, Clone)]
pub enum Else {
    If(Expr),
    Body(Body),
}
