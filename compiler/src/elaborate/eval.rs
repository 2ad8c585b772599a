//! The elaborator: runs the compile-time part of a `.net` program (arithmetic, conditionals, loops,
//! block calls) and builds the IR graph, inferring every shape as nodes are created.

use super::builtins::{self, closest, describe, CallArg};
use super::loader::Program;
use super::value::Value;
use crate::ir::{Concat, Graph, GraphOutput, Node, Op, Shape, ShapeError, ValueId, WeightExpr};
use crate::syntax::ast::*;
use crate::syntax::{Diagnostic, ErrorKind, Span, TraceFrame};
use std::collections::{HashMap, HashSet};

/// Compile-time limits that keep hostile input from hanging or exhausting the compiler.
pub const MAX_NODES: usize = 1_000_000;
pub const MAX_LIST: usize = 1_000_000;
pub const MAX_STEPS: u64 = 20_000_000;
pub const MAX_BLOCK_DEPTH: usize = 200;
/// The most errors one run reports.
pub const MAX_ERRORS: usize = 20;

/// The message of the error a use of a poisoned name (see `Frame::poisoned`) gives: never shown,
/// as the error that poisoned the name is.
const CASCADE: &str = "(a use of a value whose statement failed)";

/// Options of elaboration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replaces the declared shape of the first input (`netc summary --input 3x299x299`).
    pub input_shape: Option<Vec<usize>>,
}

/// One active block instance (for the `in bottleneck @layer3.4` trace).
struct Instance {
    block: String,
    description: String,
    call_site: Span,
    /// Whether the call gave the block a weight scope (`@name`, or a `sequential` index).
    scoped: bool,
}

/// A scope construct active in a frame: where the scope path stood before it, and the nn.Sequential-style
/// counter when the construct is a `sequential`.
struct ScopeCtx {
    depth_before: usize,
    seq_counter: Option<usize>,
}

/// The state of one block body (or the network body) being evaluated.
struct Frame {
    vars: HashMap<String, Value>,
    /// Names assigned a tensor that no expression has read yet, with where they were assigned.
    unread: HashMap<String, Span>,
    /// The variables of the `for` loops being run in this frame.
    loop_vars: Vec<String>,
    /// Names whose statement failed (network body only): a use of one fails quietly, as its error
    /// has been reported.
    poisoned: HashSet<String>,
    /// Absolute weight-scope path at this point.
    scope: Vec<String>,
    scopes: Vec<ScopeCtx>,
    training: bool,
}

impl Frame {
    fn new(scope: Vec<String>, training: bool) -> Frame {
        Frame {
            vars: HashMap::new(),
            unread: HashMap::new(),
            loop_vars: Vec::new(),
            poisoned: HashSet::new(),
            scope,
            scopes: Vec::new(),
            training,
        }
    }

    fn push_scope(&mut self, segments: Vec<String>, sequential: bool) {
        self.scopes.push(ScopeCtx { depth_before: self.scope.len(), seq_counter: sequential.then_some(0) });
        self.scope.extend(segments);
    }

    fn pop_scope(&mut self) {
        if let Some(ctx) = self.scopes.pop() {
            self.scope.truncate(ctx.depth_before);
        }
    }
}

type R<T> = Result<T, Diagnostic>;

/// Elaborates the program's network into a graph.
pub fn elaborate(program: &Program, options: &Options) -> R<Graph> {
    let (_, net) = &program.network;
    let mut elab = Elab {
        prog: program,
        graph: Graph::new(net.name.name.clone()),
        used_names: HashSet::new(),
        next_suffix: HashMap::new(),
        scope_sites: HashMap::new(),
        literal_var_segments: HashSet::new(),
        instances: Vec::new(),
        steps: 0,
    };
    let mut frame = Frame::new(Vec::new(), false);
    for (i, input) in net.inputs.iter().enumerate() {
        let declared = elab.shape_dims(&mut frame, &input.shape)?;
        let dims = match (&options.input_shape, i) {
            (Some(dims), 0) => dims.clone(),
            _ => declared,
        };
        crate::ir::shape::check_size("input", &dims)
            .map_err(|e| elab.error(ErrorKind::Size, e.to_string(), input.shape.span))?;
        if frame.vars.contains_key(&input.name.name) {
            return Err(elab.error(
                ErrorKind::Duplicate,
                format!("input `{}` is declared twice", input.name.name),
                input.name.span,
            ));
        }
        let node = Node {
            op: Op::Input,
            weights: Vec::new(),
            name: input.name.name.clone(),
            scope: None,
            instance: Vec::new(),
            shape: Shape(dims),
            training_only: false,
        };
        elab.used_names.insert(node.name.clone());
        let id = elab.graph.add_node(node, &[]);
        elab.graph.inputs.push(id.value());
        frame.vars.insert(input.name.name.clone(), Value::Tensor(id.value()));
    }
    let result = elab.network_body(&mut frame, &net.body)?;
    elab.check_unread(&frame)?;
    let outputs = match &result {
        Value::Tensor(v) => vec![*v],
        Value::List(items) if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Tensor(_))) => {
            items.iter().map(|v| if let Value::Tensor(t) = v { *t } else { unreachable!() }).collect()
        }
        other => {
            let d = elab.error(
                ErrorKind::Structure,
                format!(
                    "the network must end with its output tensor (or a tuple of tensors), but it ends with {}",
                    describe(other)
                ),
                last_span(&net.body),
            );
            return Err(elab.explain_missing_else(d, &net.body));
        }
    };
    for v in outputs {
        let training_only = elab.graph.node(v.producer()).training_only;
        elab.graph.outputs.push(GraphOutput { value: v, training_only });
    }
    if elab.graph.outputs[0].training_only {
        return Err(elab.error(
            ErrorKind::Structure,
            "the network's first output is computed by training-only layers, so inference has no output",
            last_span(&net.body),
        ));
    }
    Ok(elab.graph)
}

fn stmt_span(stmt: &Stmt) -> Span {
    match stmt {
        Stmt::Assign { pattern, value } => pattern.span().to(value.span),
        Stmt::For { span, .. } | Stmt::Train { span, .. } => *span,
        Stmt::Scope { path, body } | Stmt::Sequential { path, body } => path.span.to(body.span),
        Stmt::Expr(e) => e.span,
    }
}

fn last_span(body: &Body) -> Span {
    match body.stmts.last() {
        Some(Stmt::Expr(e)) => e.span,
        Some(Stmt::Assign { value, .. }) => value.span,
        _ => body.span,
    }
}

struct Elab<'p> {
    prog: &'p Program,
    graph: Graph,
    used_names: HashSet<String>,
    /// The next suffix to try for each generated name's base.
    next_suffix: HashMap<String, usize>,
    /// Weight scope -> where it was first given, and the block instances (with call sites) there.
    scope_sites: HashMap<String, (Span, Vec<Span>)>,
    /// Scope segments written as literal text that is also the name of a value in scope
    /// (`@layer1.i` inside `for i`): a likely missing `{i}`.
    literal_var_segments: HashSet<String>,
    instances: Vec<Instance>,
    steps: u64,
}

impl Elab<'_> {
    fn error(&self, kind: ErrorKind, message: impl Into<String>, span: Span) -> Diagnostic {
        let mut d = Diagnostic::new(kind, message, Some(self.prog.sources.locate(span)));
        d.trace = self
            .instances
            .iter()
            .rev()
            .map(|i| TraceFrame {
                description: i.description.clone(),
                call_site: Some(self.prog.sources.locate(i.call_site)),
            })
            .collect();
        d
    }

    fn step(&mut self, span: Span) -> R<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.error(
                ErrorKind::Limit,
                format!("elaboration takes more than {MAX_STEPS} steps; is a loop far too long?"),
                span,
            ));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ statements

    fn body(&mut self, frame: &mut Frame, body: &Body) -> R<Value> {
        let mut last = Value::Unit;
        for (i, stmt) in body.stmts.iter().enumerate() {
            last = self.checked_stmt(frame, stmt, i + 1 == body.stmts.len())?;
        }
        Ok(last)
    }

    /// A statement of a body; a tensor computed by a statement that is not the last is an error.
    fn checked_stmt(&mut self, frame: &mut Frame, stmt: &Stmt, is_last: bool) -> R<Value> {
        let value = self.stmt(frame, stmt)?;
        if !is_last {
            if let Value::Tensor(_) = value {
                return Err(self.error(
                    ErrorKind::Structure,
                    "this tensor is computed but never used; assign it (`x = ...`) or remove it",
                    stmt_span(stmt),
                ));
            }
        }
        Ok(value)
    }

    /// The network's body: like [`Self::body`], but an error in one statement does not stop the
    /// others. The names the failed statement assigns are poisoned, so statements that use them fail
    /// quietly; every independent error is reported, up to [`MAX_ERRORS`].
    fn network_body(&mut self, frame: &mut Frame, body: &Body) -> R<Value> {
        let mut errors: Vec<Diagnostic> = Vec::new();
        let mut last = Value::Unit;
        // Where the last failed statement ends: a statement on the same line is most likely a piece
        // of it (`conv (16, 3)` is `conv` and then `(16, 3)`), and its error would repeat the mistake.
        let mut failed_end: Option<Span> = None;
        let line = |me: &Self, span: Span| me.prog.sources.locate(span).line;
        for (i, stmt) in body.stmts.iter().enumerate() {
            let span = stmt_span(stmt);
            match self.checked_stmt(frame, stmt, i + 1 == body.stmts.len()) {
                Ok(v) => {
                    last = v;
                    failed_end = None;
                }
                Err(d) => {
                    // Past the step limit every statement would fail again.
                    let fatal = d.kind == ErrorKind::Limit;
                    let same_line = failed_end
                        .is_some_and(|end| line(self, Span { start: end.end, ..end }) == line(self, span));
                    failed_end = Some(span);
                    if d.message != CASCADE && !same_line {
                        errors.push(d);
                    }
                    if fatal || errors.len() >= MAX_ERRORS {
                        break;
                    }
                    assigned_names(stmt, &mut frame.poisoned);
                }
            }
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            // Only a reported error poisons names, so a quiet failure implies one.
            None => Ok(last),
            Some(mut first) => {
                first.more = errors.collect();
                Err(first)
            }
        }
    }

    fn stmt(&mut self, frame: &mut Frame, stmt: &Stmt) -> R<Value> {
        match stmt {
            Stmt::Assign { pattern, value } => {
                self.step(value.span)?;
                let v = self.expr(frame, value)?;
                let pieces = match (&value.kind, &v) {
                    (ExprKind::Call { callee, .. }, Value::List(items)) if callee.name == "chunk" => {
                        Some(items.len())
                    }
                    _ => None,
                };
                self.bind(frame, pattern, v).map_err(|d| match (pieces, pattern) {
                    (Some(n), Pattern::Tuple(parts, _)) if n != parts.len() => d.with_help(format!(
                        "this `chunk` gives {n} piece{}: write {n} name{}; like torch's `chunk`, it cuts \
                         ceil(channels / chunks) channels a piece, so fewer pieces than chunks when that \
                         does not divide the channels",
                        if n == 1 { "" } else { "s" },
                        if n == 1 { "" } else { "s" }
                    )),
                    _ => d,
                })?;
                self.track_unread(frame, pattern)?;
                Ok(Value::Unit)
            }
            Stmt::Expr(e) => {
                self.step(e.span)?;
                match &e.kind {
                    ExprKind::If { cond, then, otherwise } => {
                        self.if_expr(frame, cond, then, otherwise.as_deref(), e.span, true)
                    }
                    _ => self.expr(frame, e),
                }
            }
            Stmt::Scope { path, body } | Stmt::Sequential { path, body } => {
                let segments = self.scope_path(frame, path)?;
                frame.push_scope(segments, matches!(stmt, Stmt::Sequential { .. }));
                let result = self.body(frame, body);
                frame.pop_scope();
                result
            }
            Stmt::Train { body, .. } => {
                let was = frame.training;
                frame.training = true;
                let result = self.body(frame, body);
                frame.training = was;
                result
            }
            Stmt::For { index, pattern, iter, scope, body, .. } => {
                let items = match self.expr(frame, iter)? {
                    Value::List(items) => items,
                    other => {
                        return Err(self.error(
                            ErrorKind::Type,
                            format!("`for` needs a list or range, got {}", describe(&other)),
                            iter.span,
                        ))
                    }
                };
                let depth = frame.loop_vars.len();
                if let Some(index) = index {
                    frame.loop_vars.push(index.name.clone());
                }
                pattern_names(pattern, &mut frame.loop_vars);
                let result = self.for_items(frame, items, index.as_ref(), pattern, scope.as_ref(), body);
                frame.loop_vars.truncate(depth);
                result.map(|()| Value::Unit)
            }
        }
    }

    fn for_items(
        &mut self,
        frame: &mut Frame,
        items: Vec<Value>,
        index: Option<&Ident>,
        pattern: &Pattern,
        scope: Option<&ScopePath>,
        body: &Body,
    ) -> R<()> {
        for (k, item) in items.into_iter().enumerate() {
            self.step(body.span)?;
            if let Some(index) = index {
                frame.vars.insert(index.name.clone(), Value::Int(k as i64));
            }
            self.bind(frame, pattern, item)?;
            match scope {
                Some(path) => {
                    let segments = self.scope_path(frame, path)?;
                    frame.push_scope(segments, false);
                    let result = self.body(frame, body);
                    frame.pop_scope();
                    result?;
                }
                None => {
                    self.body(frame, body)?;
                }
            }
        }
        Ok(())
    }

    fn bind(&mut self, frame: &mut Frame, pattern: &Pattern, value: Value) -> R<()> {
        match pattern {
            Pattern::Name(id) => {
                if builtins::is_builtin(&id.name) || self.prog.blocks.contains_key(&id.name) {
                    return Err(self.error(
                        ErrorKind::Duplicate,
                        format!("`{}` names a layer; choose another variable name", id.name),
                        id.span,
                    ));
                }
                frame.vars.insert(id.name.clone(), value);
                Ok(())
            }
            Pattern::Tuple(parts, span) => match value {
                Value::List(items) if items.len() == parts.len() => {
                    for (p, v) in parts.iter().zip(items) {
                        self.bind(frame, p, v)?;
                    }
                    Ok(())
                }
                other => Err(self.error(
                    ErrorKind::Type,
                    format!("cannot unpack {} into {} names", describe(&other), parts.len()),
                    *span,
                )),
            },
        }
    }

    fn scope_path(&mut self, frame: &mut Frame, path: &ScopePath) -> R<Vec<String>> {
        let mut segments = Vec::new();
        for segment in &path.segments {
            let mut text = String::new();
            for part in segment {
                match part {
                    SegmentPart::Text(t) | SegmentPart::Quoted(t) => text.push_str(t),
                    SegmentPart::Expr(e) => match self.expr(frame, e)? {
                        Value::Int(i) => text.push_str(&i.to_string()),
                        Value::Str(s) => text.push_str(&s),
                        other => {
                            return Err(self.error(
                                ErrorKind::Type,
                                format!(
                                    "a scope name can include integers and strings, not {}",
                                    describe(&other)
                                ),
                                e.span,
                            ))
                        }
                    },
                }
            }
            if let [SegmentPart::Text(t)] = segment.as_slice() {
                if frame.loop_vars.contains(t) {
                    return Err(self.literal_loop_var(path, t));
                }
                if frame.vars.contains_key(t) {
                    self.literal_var_segments.insert(t.clone());
                }
            }
            if text.is_empty() || text.contains(|c: char| c == '.' || c.is_whitespace() || c.is_control()) {
                return Err(self
                    .error(
                        ErrorKind::Structure,
                        format!("`{}` is not a valid scope segment", text.escape_debug()),
                        path.span,
                    )
                    .with_help(
                        "a segment is a non-empty name without dots or spaces; quote one with other characters: \
                         `@trunk_output.\"block1-0\"`",
                    ));
            }
            segments.push(text);
        }
        Ok(segments)
    }

    fn shape_dims(&mut self, frame: &mut Frame, spec: &ShapeSpec) -> R<Vec<usize>> {
        let mut dims = Vec::new();
        for dim in &spec.dims {
            let Some(e) = dim else {
                return Err(self.error(
                    ErrorKind::Structure,
                    "an input shape must give every size (no `_`)",
                    spec.span,
                ));
            };
            match self.expr(frame, e)? {
                Value::Int(v) if v >= 1 && v <= crate::ir::shape::MAX_DIM as i64 => dims.push(v as usize),
                Value::Int(v) => {
                    return Err(self.error(
                        ErrorKind::Size,
                        format!("input size {v} is out of range 1..={}", crate::ir::shape::MAX_DIM),
                        e.span,
                    ))
                }
                other => {
                    return Err(self.error(
                        ErrorKind::Type,
                        format!("a size must be an integer, got {}", describe(&other)),
                        e.span,
                    ))
                }
            }
        }
        Ok(dims)
    }

    // ------------------------------------------------------------------ expressions

    fn expr(&mut self, frame: &mut Frame, expr: &Expr) -> R<Value> {
        let span = expr.span;
        match &expr.kind {
            ExprKind::Int(v) => Ok(Value::Int(*v)),
            ExprKind::Float(v) => Ok(Value::Float(*v)),
            ExprKind::Bool(v) => Ok(Value::Bool(*v)),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::Name(name) => {
                frame.unread.remove(name);
                self.lookup(frame, name, span)
            }
            ExprKind::List(items) | ExprKind::Tuple(items) => {
                let values = items.iter().map(|e| self.expr(frame, e)).collect::<R<Vec<_>>>()?;
                Ok(Value::List(values))
            }
            ExprKind::Unary(op, operand) => {
                let v = self.expr(frame, operand)?;
                match (op, v) {
                    (UnOp::Neg, Value::Int(i)) => i
                        .checked_neg()
                        .map(Value::Int)
                        .ok_or_else(|| self.error(ErrorKind::Size, "integer overflow in negation", span)),
                    (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
                    (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (op, v) => Err(self.error(
                        ErrorKind::Type,
                        format!(
                            "`{}` cannot be applied to {}",
                            if *op == UnOp::Neg { "-" } else { "not" },
                            describe(&v)
                        ),
                        span,
                    )),
                }
            }
            ExprKind::Binary(op, lhs, rhs) => self.binary(frame, *op, lhs, rhs, span),
            ExprKind::Range(lo, hi) => {
                let (lo_v, hi_v) = (self.expr(frame, lo)?, self.expr(frame, hi)?);
                let (Value::Int(a), Value::Int(b)) = (&lo_v, &hi_v) else {
                    return Err(self.error(ErrorKind::Type, "a range `a..b` needs integers", span));
                };
                let len = b.saturating_sub(*a).max(0);
                if len as u64 > MAX_LIST as u64 {
                    return Err(self.error(
                        ErrorKind::Limit,
                        format!("range of {len} items is longer than the limit of {MAX_LIST}"),
                        span,
                    ));
                }
                Ok(Value::List((*a..*b).map(Value::Int).collect()))
            }
            ExprKind::If { cond, then, otherwise } => {
                self.if_expr(frame, cond, then, otherwise.as_deref(), span, false)
            }
            ExprKind::Call { callee, args } => self.call(frame, callee, args, None, span),
            ExprKind::Scoped(inner, path) => match &inner.kind {
                ExprKind::Call { callee, args } => {
                    let segments = self.scope_path(frame, path)?;
                    self.call(frame, callee, args, Some(segments), inner.span)
                }
                _ => Err(self.error(
                    ErrorKind::Structure,
                    "a scope `@name` can only follow a layer or block call",
                    path.span,
                )),
            },
            ExprKind::AssertShape(inner, spec) => {
                let v = self.expr(frame, inner)?;
                let Value::Tensor(t) = v else {
                    return Err(self.error(
                        ErrorKind::Type,
                        format!("a shape assertion needs a tensor, got {}", describe(&v)),
                        inner.span,
                    ));
                };
                let actual = self.graph.shape(t).clone();
                let mut expected = Vec::new();
                let mut ok = spec.dims.len() == actual.rank();
                for (i, dim) in spec.dims.iter().enumerate() {
                    match dim {
                        None => expected.push("_".to_string()),
                        Some(e) => match self.expr(frame, e)? {
                            Value::Int(n) => {
                                expected.push(n.to_string());
                                ok &= actual.dims().get(i).is_some_and(|&a| a as i64 == n);
                            }
                            other => {
                                return Err(self.error(
                                    ErrorKind::Type,
                                    format!("a size must be an integer, got {}", describe(&other)),
                                    e.span,
                                ))
                            }
                        },
                    }
                }
                if !ok {
                    return Err(self.error(
                        ErrorKind::Assertion,
                        format!("shape assertion failed: expected [{}], found {actual}", expected.join(", ")),
                        spec.span,
                    ));
                }
                Ok(v)
            }
            ExprKind::Member(base, field) => {
                let v = self.expr(frame, base)?;
                let Value::Tensor(t) = v else {
                    return Err(self.error(
                        ErrorKind::Type,
                        format!("`.{}` needs a tensor, got {}", field.name, describe(&v)),
                        span,
                    ));
                };
                let shape = self.graph.shape(t).clone();
                let dims = shape.dims();
                let int = |d: usize| Value::Int(d as i64);
                match (field.name.as_str(), dims) {
                    ("c", [c, ..]) => Ok(int(*c)),
                    ("h", [_, h, _]) => Ok(int(*h)),
                    ("w", [_, _, w]) => Ok(int(*w)),
                    ("rank", _) => Ok(int(dims.len())),
                    ("shape", _) => Ok(Value::List(dims.iter().map(|&d| int(d)).collect())),
                    (f @ ("h" | "w"), _) => Err(self.error(
                        ErrorKind::Type,
                        format!("`.{f}` needs a [C, H, W] tensor, this one is {shape}"),
                        field.span,
                    )),
                    (f, _) => Err(self.error(
                        ErrorKind::UnknownName,
                        format!("tensors have no field `.{f}` (they have .c, .h, .w, .rank and .shape)"),
                        field.span,
                    )),
                }
            }
        }
    }

    fn lookup(&self, frame: &Frame, name: &str, span: Span) -> R<Value> {
        if frame.poisoned.contains(name) {
            return Err(Diagnostic::new(ErrorKind::Structure, CASCADE, None));
        }
        if let Some(v) = frame.vars.get(name) {
            return Ok(v.clone());
        }
        if builtins::is_builtin(name) || self.prog.blocks.contains_key(name) {
            let d = self.error(
                ErrorKind::Type,
                format!("`{name}` is a layer, not a value: call it (`{name}(x, ...)`) or use it in a pipeline (`x |> {name}`)"),
                span,
            );
            return Err(self.paren_hint(d, name, span));
        }
        let mut d = self.error(ErrorKind::UnknownName, format!("no value named `{name}`"), span);
        if let Some(s) = closest(name, frame.vars.keys().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    fn binary(&mut self, frame: &mut Frame, op: BinOp, lhs: &Expr, rhs: &Expr, span: Span) -> R<Value> {
        // `and` / `or` short-circuit.
        if matches!(op, BinOp::And | BinOp::Or) {
            let l = self.expr(frame, lhs)?;
            let Value::Bool(a) = l else {
                return Err(self.error(
                    ErrorKind::Type,
                    format!("`{}` needs true or false, got {}", op.symbol(), describe(&l)),
                    lhs.span,
                ));
            };
            if (op == BinOp::And && !a) || (op == BinOp::Or && a) {
                return Ok(Value::Bool(a));
            }
            let r = self.expr(frame, rhs)?;
            return match r {
                Value::Bool(b) => Ok(Value::Bool(b)),
                _ => Err(self.error(
                    ErrorKind::Type,
                    format!("`{}` needs true or false, got {}", op.symbol(), describe(&r)),
                    rhs.span,
                )),
            };
        }
        let l = self.expr(frame, lhs)?;
        let r = self.expr(frame, rhs)?;
        if let (BinOp::Add, Value::Tensor(a), Value::Tensor(b)) = (op, &l, &r) {
            self.step(span)?;
            let scope = None;
            return self.add_node(frame, Op::Add, &[*a, *b], scope, span).map(Value::Tensor);
        }
        if let (BinOp::Mul, Value::Tensor(a), Value::Tensor(b)) = (op, &l, &r) {
            self.step(span)?;
            // The per-channel factor is input 1 whichever side it was written on (`s * x` = `x * s`).
            let per_channel = |v: &ValueId| matches!(self.graph.shape(*v).as_chw(), Some((_, 1, 1)));
            let (a, b) = if per_channel(a) && !per_channel(b) { (b, a) } else { (a, b) };
            return self.add_node(frame, Op::Mul, &[*a, *b], None, span).map(Value::Tensor);
        }
        let overflow = || format!("integer overflow in `{}`", op.symbol());
        let type_error = |me: &Self| {
            me.error(
                ErrorKind::Type,
                format!("`{}` cannot combine {} and {}", op.symbol(), describe(&l), describe(&r)),
                span,
            )
        };
        match op {
            BinOp::Eq | BinOp::Ne => {
                let eq = match (&l, &r) {
                    (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => *a as f64 == *b,
                    (Value::Tensor(_), _) | (_, Value::Tensor(_)) => return Err(type_error(self)),
                    (a, b) => a == b,
                };
                Ok(Value::Bool(eq == (op == BinOp::Eq)))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ord = match (&l, &r) {
                    (Value::Int(a), Value::Int(b)) => a.cmp(b),
                    _ => match (as_f64(&l), as_f64(&r)) {
                        (Some(a), Some(b)) => a.partial_cmp(&b).ok_or_else(|| type_error(self))?,
                        _ => return Err(type_error(self)),
                    },
                };
                use std::cmp::Ordering::*;
                Ok(Value::Bool(match op {
                    BinOp::Lt => ord == Less,
                    BinOp::Le => ord != Greater,
                    BinOp::Gt => ord == Greater,
                    _ => ord != Less,
                }))
            }
            _ => match (&l, &r) {
                (Value::Int(a), Value::Int(b)) => {
                    let (a, b) = (*a, *b);
                    if matches!(op, BinOp::FloorDiv | BinOp::Rem | BinOp::Div) && b == 0 {
                        return Err(self.error(ErrorKind::Size, "division by zero", span));
                    }
                    let v = match op {
                        BinOp::Add => a.checked_add(b),
                        BinOp::Sub => a.checked_sub(b),
                        BinOp::Mul => a.checked_mul(b),
                        BinOp::FloorDiv => {
                            a.checked_div_euclid(b)
                                .map(|q| if b < 0 && a.rem_euclid(b) != 0 { q - 1 } else { q })
                        }
                        BinOp::Rem => a.checked_rem_euclid(b),
                        BinOp::Div => return Ok(Value::Float(a as f64 / b as f64)),
                        _ => unreachable!(),
                    };
                    v.map(Value::Int).ok_or_else(|| self.error(ErrorKind::Size, overflow(), span))
                }
                (Value::Str(a), Value::Str(b)) if op == BinOp::Add => Ok(Value::Str(format!("{a}{b}"))),
                (Value::List(a), Value::List(b)) if op == BinOp::Add => {
                    if a.len() + b.len() > MAX_LIST {
                        return Err(self.error(ErrorKind::Limit, "list too long", span));
                    }
                    Ok(Value::List(a.iter().chain(b).cloned().collect()))
                }
                _ => {
                    let (Some(a), Some(b)) = (as_f64(&l), as_f64(&r)) else { return Err(type_error(self)) };
                    let v = match op {
                        BinOp::Add => a + b,
                        BinOp::Sub => a - b,
                        BinOp::Mul => a * b,
                        BinOp::Div => a / b,
                        BinOp::FloorDiv => (a / b).floor(),
                        BinOp::Rem => a.rem_euclid(b),
                        _ => unreachable!(),
                    };
                    if !v.is_finite() {
                        return Err(self.error(
                            ErrorKind::Size,
                            format!("`{}` gives a non-finite number", op.symbol()),
                            span,
                        ));
                    }
                    Ok(Value::Float(v))
                }
            },
        }
    }

    // ------------------------------------------------------------------ calls and layers

    /// Evaluates a call of a built-in layer or a block; `explicit` is the `@scope` written after it.
    fn call(
        &mut self,
        frame: &mut Frame,
        callee: &Ident,
        args: &[Arg],
        explicit: Option<Vec<String>>,
        span: Span,
    ) -> R<Value> {
        self.step(span)?;
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.expr(frame, &a.value)?);
        }
        let name = callee.name.as_str();
        if name == "concat" {
            return self.concat(frame, args, values, explicit, span);
        }
        if name == "chunk" {
            return self.chunk(frame, args, values, explicit, span);
        }
        if builtins::is_builtin(name) {
            return self
                .builtin(frame, callee, args, values, explicit, span)
                .map_err(|d| self.paren_hint(d, name, callee.span));
        }
        let prog = self.prog;
        let namespace = self
            .instances
            .last()
            .and_then(|i| prog.block_namespaces.get(&i.block))
            .map_or("", String::as_str);
        if let Some(resolved) = prog.resolve_block(namespace, name) {
            let callee = &Ident { name: resolved, span: callee.span };
            return self.block_call(frame, callee, args, values, explicit, span).map_err(|d| {
                // Only an error of this call's own arguments, not one from inside the block.
                if d.kind == ErrorKind::Arity && d.message.starts_with(&format!("block `{}`", callee.name)) {
                    self.paren_hint(d, name, callee.span)
                } else {
                    d
                }
            });
        }
        let mut d =
            self.error(ErrorKind::UnknownName, format!("no layer or block named `{name}`"), callee.span);
        let candidates =
            builtins::BUILTINS.iter().copied().chain(self.prog.blocks.keys().map(String::as_str));
        if let (true, [a, b]) = (matches!(name.rsplit('.').next(), Some("add")), args) {
            let text = |e: &Expr| self.prog.sources.text(e.span).to_string();
            d = d.with_help(format!(
                "a residual sum is written with `+`: `{} + {}`",
                text(&a.value),
                text(&b.value)
            ));
        } else if let Some(help) = builtins::pytorch_layer(name) {
            d = d.with_help(help);
        } else if let Some(q) = prog.blocks.keys().filter(|k| k.ends_with(&format!(".{name}"))).min() {
            d = d.with_help(format!("did you mean `{q}`? (a block of a file brought in with `use ... as`)"));
        } else if let Some(s) = closest(name, candidates) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    /// The weight scope of a layer call: the explicit `@path` below the current scope, else the next
    /// index of an enclosing `sequential`, else none.
    fn layer_scope(frame: &mut Frame, explicit: Option<Vec<String>>) -> Option<Vec<String>> {
        match explicit {
            Some(segments) => Some(frame.scope.iter().cloned().chain(segments).collect()),
            None => {
                let ctx = frame.scopes.last_mut()?;
                let n = ctx.seq_counter.as_mut()?;
                let mut path = frame.scope.clone();
                path.push(n.to_string());
                *n += 1;
                Some(path)
            }
        }
    }

    fn builtin(
        &mut self,
        frame: &mut Frame,
        callee: &Ident,
        args: &[Arg],
        values: Vec<Value>,
        explicit: Option<Vec<String>>,
        span: Span,
    ) -> R<Value> {
        let name = callee.name.as_str();
        if args.is_empty() || args[0].name.is_some() {
            return Err(self.error(
                ErrorKind::Arity,
                format!("`{name}` needs an input tensor first: `{name}(x, ...)` or `x |> {name}(...)`"),
                span,
            ));
        }
        let mut values = values.into_iter();
        let input_value = values.next().expect("checked non-empty");
        let Value::Tensor(input) = input_value else {
            return Err(self.error(
                ErrorKind::Type,
                format!("the input of `{name}` must be a tensor, got {}", describe(&input_value)),
                args[0].value.span,
            ));
        };
        let call_args: Vec<CallArg> = args[1..]
            .iter()
            .zip(values)
            .enumerate()
            .map(|(i, (a, value))| CallArg {
                name: a.name.as_ref().map(|n| n.name.clone()),
                value,
                site: i + 1,
            })
            .collect();
        let shape = self.graph.shape(input).clone();
        let op = builtins::build_op(name, &shape, call_args).map_err(|e| {
            let at = e.site.map_or(span, |i| {
                args[i].value.span.to(args[i].name.as_ref().map_or(args[i].value.span, |n| n.span))
            });
            let d = self.error(e.kind, e.message, at);
            match e.help {
                Some(h) => d.with_help(h),
                None => d,
            }
        })?;
        let scope = Self::layer_scope(frame, explicit);
        self.add_node(frame, op, &[input], scope, span).map(Value::Tensor)
    }

    fn concat(
        &mut self,
        frame: &mut Frame,
        args: &[Arg],
        values: Vec<Value>,
        explicit: Option<Vec<String>>,
        span: Span,
    ) -> R<Value> {
        if let Some(named) = args.iter().find_map(|a| a.name.as_ref()) {
            return Err(self.error(
                ErrorKind::Arity,
                "`concat` takes tensors only, no named arguments",
                named.span,
            ));
        }
        // `concat(a, b, c)` or `concat([a, b, c])`.
        let (items, sites): (Vec<Value>, Vec<Span>) = match values.as_slice() {
            [Value::List(items)] => (items.clone(), vec![args[0].value.span; items.len()]),
            _ => (values, args.iter().map(|a| a.value.span).collect()),
        };
        if items.is_empty() {
            return Err(self.error(ErrorKind::Arity, "`concat` needs at least one tensor", span));
        }
        let mut inputs = Vec::new();
        for (v, site) in items.iter().zip(sites) {
            match v {
                Value::Tensor(t) => inputs.push(*t),
                other => {
                    return Err(self.error(
                        ErrorKind::Type,
                        format!("`concat` joins tensors, got {}", describe(other)),
                        site,
                    ))
                }
            }
        }
        if explicit.is_some() {
            return Err(self.error(
                ErrorKind::Structure,
                "`concat` owns no weights and takes no scope",
                span,
            ));
        }
        self.add_node(frame, Op::Concat(Concat { in_place: false }), &inputs, None, span).map(Value::Tensor)
    }

    /// `chunk(x, chunks, dim = 1)`: torch's `x.chunk(chunks, dim=1)`, channel slices of
    /// `ceil(C / chunks)` channels (the last one smaller; fewer than `chunks` pieces when the size
    /// runs out first), as a tuple to destructure: `(a, b) = chunk(x, 2)`.
    fn chunk(
        &mut self,
        frame: &mut Frame,
        args: &[Arg],
        values: Vec<Value>,
        explicit: Option<Vec<String>>,
        span: Span,
    ) -> R<Value> {
        let usage = "`chunk` takes a tensor and a number of pieces: `(a, b) = chunk(x, 2)`";
        let (Some(first), true) = (values.first(), args.first().is_some_and(|a| a.name.is_none())) else {
            return Err(self.error(ErrorKind::Arity, usage, span));
        };
        let Value::Tensor(input) = *first else {
            return Err(self.error(
                ErrorKind::Type,
                format!("the input of `chunk` must be a tensor, got {}", describe(first)),
                args[0].value.span,
            ));
        };
        let (mut chunks, mut dim) = (None, None);
        let mut positional = 0;
        for (a, v) in args.iter().zip(&values).skip(1) {
            let slot = match a.name.as_ref().map(|n| n.name.as_str()) {
                None if positional == 0 => {
                    positional += 1;
                    &mut chunks
                }
                None => {
                    positional += 1;
                    &mut dim
                }
                Some("chunks") => &mut chunks,
                Some("dim") => &mut dim,
                Some(other) => {
                    return Err(self.error(
                        ErrorKind::Arity,
                        format!("`chunk` has no argument named `{other}` (it takes: chunks, dim)"),
                        a.value.span,
                    ))
                }
            };
            if positional > 2 || slot.is_some() {
                return Err(self.error(ErrorKind::Arity, usage, a.value.span));
            }
            *slot = Some((v.clone(), a.value.span));
        }
        let Some((chunks, chunks_span)) = chunks else {
            return Err(self.error(ErrorKind::Arity, "`chunk` needs argument `chunks`", span));
        };
        if let Some((d, at)) = dim {
            if d != Value::Int(1) {
                return Err(self.error(
                    ErrorKind::Size,
                    "`chunk` splits channels only: `dim = 1` (dim 0 is the batch)",
                    at,
                ));
            }
        }
        let chunks = match chunks {
            Value::Int(n) if (1..=crate::ir::shape::MAX_DIM as i64).contains(&n) => n as usize,
            Value::Int(n) => {
                return Err(self.error(
                    ErrorKind::Size,
                    format!("`chunk` needs at least 1 piece, got {n}"),
                    chunks_span,
                ))
            }
            other => {
                return Err(self.error(
                    ErrorKind::Type,
                    format!("argument `chunks` of `chunk` must be an integer, got {}", describe(&other)),
                    chunks_span,
                ))
            }
        };
        if explicit.is_some() {
            return Err(self.error(ErrorKind::Structure, "`chunk` owns no weights and takes no scope", span));
        }
        let c = match self.graph.shape(input).dims().first() {
            Some(&c) if self.graph.shape(input).rank() >= 2 => c,
            _ => {
                return Err(self.error(
                    ErrorKind::Shape,
                    format!("`chunk` splits the channels of a feature map, got {}", self.graph.shape(input)),
                    args[0].value.span,
                ))
            }
        };
        let size = c.div_ceil(chunks);
        let mut parts = Vec::new();
        let mut start = 0;
        while start < c {
            let len = size.min(c - start);
            let op = Op::Slice(crate::ir::ChannelSlice { start, len });
            parts.push(Value::Tensor(self.add_node(frame, op, &[input], None, span)?));
            start += len;
        }
        Ok(Value::List(parts))
    }

    fn block_call(
        &mut self,
        frame: &mut Frame,
        callee: &Ident,
        args: &[Arg],
        values: Vec<Value>,
        explicit: Option<Vec<String>>,
        span: Span,
    ) -> R<Value> {
        let prog = self.prog;
        let (_, block) = &prog.blocks[&callee.name];
        if self.instances.iter().any(|i| i.block == callee.name) {
            let mut chain: Vec<&str> = self.instances.iter().map(|i| i.block.as_str()).collect();
            let start = chain.iter().position(|b| *b == callee.name).unwrap_or(0);
            chain.push(&callee.name);
            return Err(self.error(
                ErrorKind::Recursion,
                format!("block recursion: {}", chain[start..].join(" -> ")),
                callee.span,
            ));
        }
        if self.instances.len() >= MAX_BLOCK_DEPTH {
            return Err(self.error(
                ErrorKind::Limit,
                format!("blocks nest deeper than {MAX_BLOCK_DEPTH}"),
                span,
            ));
        }
        // Bind arguments: positional, then named, then defaults (evaluated in the callee with the
        // parameters bound so far).
        let mut bound: Vec<Option<Value>> = vec![None; block.params.len()];
        let mut positional = 0;
        for (a, v) in args.iter().zip(values) {
            let idx = match &a.name {
                None => {
                    if positional >= block.params.len() {
                        return Err(self.error(
                            ErrorKind::Arity,
                            format!(
                                "block `{}` takes {} argument{}",
                                callee.name,
                                block.params.len(),
                                if block.params.len() == 1 { "" } else { "s" }
                            ),
                            a.value.span,
                        ));
                    }
                    positional += 1;
                    positional - 1
                }
                Some(n) => match block.params.iter().position(|p| p.name.name == n.name) {
                    Some(i) => i,
                    None => {
                        let names: Vec<&str> = block.params.iter().map(|p| p.name.name.as_str()).collect();
                        let mut d = self.error(
                            ErrorKind::Arity,
                            format!(
                                "block `{}` has no parameter `{}` (it takes: {})",
                                callee.name,
                                n.name,
                                names.join(", ")
                            ),
                            n.span,
                        );
                        if let Some(s) = closest(&n.name, names.iter().copied()) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                        return Err(d);
                    }
                },
            };
            if bound[idx].is_some() {
                return Err(self.error(
                    ErrorKind::Arity,
                    format!("parameter `{}` is given twice", block.params[idx].name.name),
                    a.value.span,
                ));
            }
            bound[idx] = Some(v);
        }
        let scope = Self::layer_scope(frame, explicit);
        let description = match &scope {
            Some(s) => format!("{} @{}", callee.name, s.join(".")),
            None => callee.name.clone(),
        };
        let scoped = scope.is_some();
        let inner_scope = scope.unwrap_or_else(|| frame.scope.clone());
        let mut inner = Frame::new(inner_scope, frame.training);
        self.instances.push(Instance { block: callee.name.clone(), description, call_site: span, scoped });
        let result = (|| {
            for (param, slot) in block.params.iter().zip(bound) {
                let value = match (slot, &param.default) {
                    (Some(v), _) => v,
                    (None, Some(default)) => self.expr(&mut inner, default)?,
                    (None, None) => {
                        let d = self.error(
                            ErrorKind::Arity,
                            format!("block `{}` needs argument `{}`", callee.name, param.name.name),
                            span,
                        );
                        return Err(d);
                    }
                };
                inner.vars.insert(param.name.name.clone(), value);
            }
            let result = self.body(&mut inner, &block.body)?;
            self.check_unread(&inner)?;
            if result == Value::Unit {
                let d = self.error(
                    ErrorKind::Structure,
                    format!("block `{}` gives no value: its body must end with one", callee.name),
                    span,
                );
                let d = self.explain_missing_else(d, &block.body);
                if !d.labels.is_empty() {
                    return Err(d);
                }
            }
            Ok(result)
        })();
        self.instances.pop();
        result
    }

    /// Creates a node: infers its shape (errors at `span`), checks and records its weight scope, names it.
    fn add_node(
        &mut self,
        frame: &Frame,
        op: Op,
        inputs: &[ValueId],
        scope: Option<Vec<String>>,
        span: Span,
    ) -> R<ValueId> {
        if self.graph.node_count() >= MAX_NODES {
            return Err(self.error(
                ErrorKind::Limit,
                format!("the graph has more than {MAX_NODES} nodes"),
                span,
            ));
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|&v| self.graph.shape(v)).collect();
        let shape = op.infer_shape(&shapes).map_err(|e| {
            let kind = match e {
                ShapeError::EmptyOutput { .. }
                | ShapeError::Overflow { .. }
                | ShapeError::TooLarge { .. }
                | ShapeError::DimTooLarge { .. } => ErrorKind::Size,
                _ => ErrorKind::Shape,
            };
            self.error(kind, e.to_string(), span)
        })?;
        let scope = scope.map(|s| s.join("."));
        let owns_weights = !op.weights().is_empty();
        if owns_weights {
            let Some(s) = &scope else {
                return Err(self.error(
                    ErrorKind::Structure,
                    format!(
                        "`{}` owns weights, so it needs a weight scope: write `@name` after the call",
                        op.name()
                    ),
                    span,
                ));
            };
            let chain: Vec<Span> = self.instances.iter().map(|i| i.call_site).collect();
            if let Some((first, first_chain)) = self.scope_sites.get(s) {
                return Err(self.duplicate_scope(s, span, *first, first_chain, &chain));
            }
            self.scope_sites.insert(s.clone(), (span, chain));
        }
        let base = match &scope {
            Some(s) => s.clone(),
            None if frame.scope.is_empty() => op.display_name().to_string(),
            None => format!("{}.{}", frame.scope.join("."), op.display_name()),
        };
        // Suffixes continue from the last one this base took, so naming stays linear in the
        // number of nodes (a loop of N relus would otherwise probe 1..N for every node).
        let mut name = base.clone();
        let next = self.next_suffix.entry(base.clone()).or_insert(1);
        while self.used_names.contains(&name) {
            name = format!("{base}_{next}");
            *next += 1;
        }
        self.used_names.insert(name.clone());
        let training_only =
            frame.training || inputs.iter().any(|v| self.graph.node(v.producer()).training_only);
        let weights = op
            .weights()
            .into_iter()
            .map(|w| {
                WeightExpr::param(format!("{}.{}", scope.as_deref().unwrap_or(&name), w.suffix), w.shape)
            })
            .collect();
        let node = Node {
            op,
            weights,
            name,
            scope,
            instance: self.instances.iter().map(|i| i.description.clone()).collect(),
            shape,
            training_only,
        };
        Ok(self.graph.add_node(node, inputs).value())
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

impl Elab<'_> {
    /// `conv (16, 3)` is `conv` followed by the tuple `(16, 3)`: when a space stands between a layer's
    /// name and a `(`, say so.
    fn paren_hint(&self, d: Diagnostic, name: &str, name_span: Span) -> Diagnostic {
        let text = &self.prog.sources.file(name_span.file).text;
        let rest = text.get(name_span.end as usize..).unwrap_or("");
        let after = rest.trim_start_matches([' ', '\t']);
        if after.len() == rest.len() || !after.starts_with('(') {
            return d;
        }
        d.with_help(format!(
            "remove the space before `(`: `{name}(...)` calls `{name}`, but `{name} (...)` is `{name}` followed by a separate value"
        ))
    }

    /// `@layer1.i` inside `for i`: the segment is the text `i`, which gives every iteration the same
    /// scope; almost surely `{i}` was meant.
    fn literal_loop_var(&self, path: &ScopePath, name: &str) -> Diagnostic {
        let sources = &self.prog.sources;
        let spell = |value: bool| -> String {
            let segments: Vec<String> = path
                .segments
                .iter()
                .map(|seg| match seg.as_slice() {
                    [SegmentPart::Text(t)] if t == name => {
                        if value {
                            format!("{{{t}}}")
                        } else {
                            format!("{{\"{t}\"}}")
                        }
                    }
                    parts => parts
                        .iter()
                        .map(|p| match p {
                            SegmentPart::Text(t) => t.clone(),
                            SegmentPart::Quoted(t) => format!("\"{t}\""),
                            SegmentPart::Expr(e) => format!("{{{}}}", sources.text(e.span)),
                        })
                        .collect(),
                })
                .collect();
            format!("@{}", segments.join("."))
        };
        self.error(
            ErrorKind::Structure,
            format!("the scope segment `{name}` is the text `{name}`, not the value of the loop variable `{name}`"),
            path.span,
        )
        .with_help(format!("write `{}` to use the value, or `{}` to mean the text", spell(true), spell(false)))
    }

    /// The `if` keyword of the `if` expression at `span`.
    fn if_keyword(span: Span) -> Span {
        Span { end: span.start + 2, ..span }
    }

    /// Evaluates `if cond { then } else ...`. As a value, every branch of the chain needs a value,
    /// so the chain must end with `else { ... }`; as a statement, a missing `else` does nothing.
    fn if_expr(
        &mut self,
        frame: &mut Frame,
        cond: &Expr,
        then: &Body,
        otherwise: Option<&Else>,
        span: Span,
        statement: bool,
    ) -> R<Value> {
        let no_else = |me: &Self, at: Span| {
            me.error(ErrorKind::Structure, "an `if` without `else` has no value", Self::if_keyword(at))
                .with_primary_label("this `if` has no `else`")
                .with_help("add `else { ... }` with the value for when the condition is false")
        };
        if !statement {
            if let Some(at) = missing_else(span, otherwise) {
                return Err(no_else(self, at));
            }
        }
        let c = self.expr(frame, cond)?;
        let Value::Bool(c) = c else {
            return Err(self.error(
                ErrorKind::Type,
                format!("an `if` condition must be true or false, got {}", describe(&c)),
                cond.span,
            ));
        };
        let value = if c {
            self.body(frame, then)?
        } else {
            match otherwise {
                None => Value::Unit,
                Some(Else::If(e)) => match &e.kind {
                    ExprKind::If { cond, then, otherwise } => {
                        self.if_expr(frame, cond, then, otherwise.as_deref(), e.span, statement)?
                    }
                    _ => self.expr(frame, e)?,
                },
                Some(Else::Body(b)) => self.body(frame, b)?,
            }
        };
        // A statement `if` without `else` whose branch computed a tensor: the tensor would be lost
        // (or, as the last statement of a body, be its value only when the condition holds).
        if let (Value::Tensor(_), Some(at)) = (&value, missing_else(span, otherwise)) {
            return Err(no_else(self, at));
        }
        Ok(value)
    }

    /// Adds to `d` (an error about a body giving no value) a label at its last statement when that is
    /// an `if` without `else`.
    fn explain_missing_else(&self, d: Diagnostic, body: &Body) -> Diagnostic {
        let Some(Stmt::Expr(Expr { kind: ExprKind::If { otherwise, .. }, span, .. })) = body.stmts.last()
        else {
            return d;
        };
        match missing_else(*span, otherwise.as_deref()) {
            Some(at) => d
                .with_label(
                    self.prog.sources.locate(Self::if_keyword(at)),
                    "this `if` has no `else`, and its condition is false here",
                )
                .with_help("add `else { ... }` with the value for when the condition is false"),
            None => d,
        }
    }

    /// Records the tensors just assigned by `pattern`; a name assigned a tensor again before any read
    /// is an unused value.
    fn track_unread(&mut self, frame: &mut Frame, pattern: &Pattern) -> R<()> {
        match pattern {
            Pattern::Name(id) => {
                if id.name.starts_with('_') || !matches!(frame.vars.get(&id.name), Some(Value::Tensor(_))) {
                    return Ok(());
                }
                if let Some(earlier) = frame.unread.insert(id.name.clone(), id.span) {
                    return Err(self
                        .unused_value(&id.name, earlier)
                        .with_label(self.prog.sources.locate(id.span), "assigned again here"));
                }
                Ok(())
            }
            Pattern::Tuple(parts, _) => parts.iter().try_for_each(|p| self.track_unread(frame, p)),
        }
    }

    /// At the end of a block or network body: a name assigned a tensor that nothing read.
    fn check_unread(&self, frame: &Frame) -> R<()> {
        match frame.unread.iter().min_by_key(|(_, span)| (span.file.0, span.start)) {
            Some((name, span)) => Err(self.unused_value(name, *span)),
            None => Ok(()),
        }
    }

    fn unused_value(&self, name: &str, span: Span) -> Diagnostic {
        self.error(ErrorKind::Structure, format!("the tensor `{name}` is computed but never used"), span)
            .with_help(format!("use it or remove it; to keep it anyway, name it `_{name}`"))
    }

    /// The error for a weight scope given twice, with what explains it: where it was first used (or
    /// that it was the same place, in an earlier loop iteration or block call), a scope segment that
    /// names a variable, a block called without a scope.
    fn duplicate_scope(
        &self,
        s: &str,
        span: Span,
        first: Span,
        first_chain: &[Span],
        chain: &[Span],
    ) -> Diagnostic {
        let sources = &self.prog.sources;
        let mut d = self.error(ErrorKind::Duplicate, format!("weight scope `{s}` is used twice"), span);
        if first != span {
            d = d.with_label(sources.locate(first), "first used here");
        } else if first_chain == chain {
            d = d
                .with_primary_label("used again here")
                .with_note("first used at this same place, by an earlier iteration of the loop around it");
        } else {
            let earlier = first_chain.iter().zip(chain).find(|(a, b)| a != b).map(|(a, _)| *a);
            d = d.with_primary_label("used again here");
            d = match earlier {
                Some(call) => d.with_label(
                    sources.locate(call),
                    "first used at the same place, in the block called here",
                ),
                None => d.with_note("first used at this same place, by an earlier block call"),
            };
        }
        for segment in s.split('.') {
            if self.literal_var_segments.contains(segment) {
                d = d.with_help(format!(
                    "the scope segment `{segment}` is the text `{segment}`, not the value of the variable `{segment}`; write `{{{segment}}}` to use its value"
                ));
            }
        }
        if let Some(unscoped) = self.instances.iter().rev().find(|i| !i.scoped) {
            d = d
                .with_label(
                    sources.locate(unscoped.call_site),
                    format!("`{}` is called without a scope", unscoped.block),
                )
                .with_help(format!(
                    "`{0}` owns weights, so each call needs its own weight scope: `{0}(...) @name`",
                    unscoped.block
                ));
        }
        d
    }
}

/// Adds the names a statement assigns (in nested loops, scopes, `train` and `if` bodies too) to `out`.
fn assigned_names(stmt: &Stmt, out: &mut HashSet<String>) {
    let mut names = Vec::new();
    let mut bodies: Vec<&Body> = Vec::new();
    match stmt {
        Stmt::Assign { pattern, .. } => pattern_names(pattern, &mut names),
        Stmt::For { index, pattern, body, .. } => {
            names.extend(index.iter().map(|i| i.name.clone()));
            pattern_names(pattern, &mut names);
            bodies.push(body);
        }
        Stmt::Scope { body, .. } | Stmt::Sequential { body, .. } | Stmt::Train { body, .. } => {
            bodies.push(body)
        }
        Stmt::Expr(Expr { kind: ExprKind::If { then, otherwise, .. }, .. }) => {
            bodies.push(then);
            let mut rest = otherwise.as_deref();
            while let Some(e) = rest {
                rest = None;
                match e {
                    Else::Body(b) => bodies.push(b),
                    Else::If(Expr { kind: ExprKind::If { then, otherwise, .. }, .. }) => {
                        bodies.push(then);
                        rest = otherwise.as_deref();
                    }
                    Else::If(_) => {}
                }
            }
        }
        Stmt::Expr(_) => {}
    }
    out.extend(names);
    for b in bodies {
        for s in &b.stmts {
            assigned_names(s, out);
        }
    }
}

/// Appends the names `pattern` binds.
fn pattern_names(pattern: &Pattern, out: &mut Vec<String>) {
    match pattern {
        Pattern::Name(id) => out.push(id.name.clone()),
        Pattern::Tuple(parts, _) => parts.iter().for_each(|p| pattern_names(p, out)),
    }
}

/// Where a chain `if ... else if ...` lacks its final `else`: the span of the last `if`.
fn missing_else(span: Span, otherwise: Option<&Else>) -> Option<Span> {
    match otherwise {
        None => Some(span),
        Some(Else::Body(_)) => None,
        Some(Else::If(e)) => match &e.kind {
            ExprKind::If { otherwise, .. } => missing_else(e.span, otherwise.as_deref()),
            _ => None,
        },
    }
}
