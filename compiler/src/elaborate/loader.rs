//! Reads the main file and, transitively, every file it `use`s; collects the blocks and the network.
//!
//! A `use "path"` is looked up relative to the using file, then in each folder of `NETC_PATH`, then in
//! the `models/` folder shipped with netc (so `use "blocks/resnet.net"` works from anywhere). The
//! blocks of `use "path" as ns` are called `ns.name`; inside that file they call each other by their
//! plain names.

use crate::syntax::ast::{BlockDef, Item, NetworkDef};
use crate::syntax::{parser, Diagnostic, ErrorKind, FileId, SourceMap, Span};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Everything the elaborator needs: the sources, every block by name and the network.
pub struct Program {
    pub sources: SourceMap,
    /// Blocks by qualified name (`ns.name` for a file used `as ns`).
    pub blocks: HashMap<String, (FileId, BlockDef)>,
    /// The namespace prefix of each block's file (`""`, or `"ns."`): where its calls look first.
    pub block_namespaces: HashMap<String, String>,
    pub network: (FileId, NetworkDef),
}

impl Program {
    /// The block a call of `name` made inside namespace `namespace` means: `namespace + name` when
    /// that exists, else `name`.
    pub fn resolve_block(&self, namespace: &str, name: &str) -> Option<String> {
        let local = format!("{namespace}{name}");
        if !namespace.is_empty() && self.blocks.contains_key(&local) {
            return Some(local);
        }
        self.blocks.contains_key(name).then(|| name.to_string())
    }
}

/// The environment variable naming extra folders (`:`-separated) where `use` looks for files.
pub const SEARCH_PATH_VAR: &str = "NETC_PATH";

/// The `models/` folder of the netc source tree, where the shipped blocks are.
fn shipped_models() -> PathBuf {
    let compiler = Path::new(env!("CARGO_MANIFEST_DIR"));
    compiler.parent().unwrap_or(compiler).join("models")
}

/// Where `use "used"` in the file `from` may be, in the order they are tried.
fn candidates(from: &Path, used: &str) -> Vec<PathBuf> {
    let used_path = Path::new(used);
    if used_path.is_absolute() {
        return vec![used_path.to_path_buf()];
    }
    let mut dirs = vec![from.parent().unwrap_or(Path::new("")).to_path_buf()];
    if let Some(var) = std::env::var_os(SEARCH_PATH_VAR) {
        dirs.extend(std::env::split_paths(&var).filter(|d| !d.as_os_str().is_empty()));
    }
    dirs.push(shipped_models());
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = d.join(used);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Loads `path` (whose text is `text` when given, else read from disk) with every `use`d file.
pub fn load(path: &Path, text: Option<String>) -> Result<Program, Diagnostic> {
    let mut loader = Loader {
        sources: SourceMap::new(),
        blocks: HashMap::new(),
        block_namespaces: HashMap::new(),
        networks: Vec::new(),
        stack: Vec::new(),
        loaded: HashSet::new(),
    };
    let text = match text {
        Some(t) => t,
        None => read(path, None, &loader.sources)?,
    };
    loader.load_file(path.to_path_buf(), text, "")?;
    let Loader { sources, blocks, block_namespaces, networks, .. } = loader;
    let mut networks = networks.into_iter();
    let network = match (networks.next(), networks.next()) {
        (Some(n), None) => n,
        (None, _) => {
            return Err(Diagnostic::new(
                ErrorKind::Structure,
                format!("{} defines no `network`", path.display()),
                None,
            )
            .with_note("a model file declares `network name(input: [c, h, w]) { ... }`"))
        }
        (Some(_), Some((file, second))) => {
            return Err(Diagnostic::new(
                ErrorKind::Structure,
                "a file may define only one network",
                Some(sources.locate(Span { file, ..second.name.span })),
            ))
        }
    };
    Ok(Program { sources, blocks, block_namespaces, network })
}

fn read(path: &Path, site: Option<Span>, sources: &SourceMap) -> Result<String, Diagnostic> {
    let error = |e: &dyn std::fmt::Display| {
        Diagnostic::new(
            ErrorKind::Io,
            format!("cannot read {}: {e}", path.display()),
            site.map(|s| sources.locate(s)),
        )
    };
    let bytes = crate::files::read_capped(path, crate::files::MAX_SOURCE_BYTES).map_err(|e| error(&e))?;
    String::from_utf8(bytes).map_err(|_| error(&"stream did not contain valid UTF-8"))
}

struct Loader {
    sources: SourceMap,
    blocks: HashMap<String, (FileId, BlockDef)>,
    block_namespaces: HashMap<String, String>,
    networks: Vec<(FileId, NetworkDef)>,
    /// Files being loaded, outermost first, for detecting `use` cycles.
    stack: Vec<PathBuf>,
    /// Every file loaded so far (canonical paths) with the namespace it was loaded into; a file used
    /// twice into the same namespace is loaded once.
    loaded: HashSet<(PathBuf, String)>,
}

impl Loader {
    fn load_file(&mut self, path: PathBuf, text: String, namespace: &str) -> Result<(), Diagnostic> {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        self.loaded.insert((key.clone(), namespace.to_string()));
        self.stack.push(key);
        let file = self.sources.add(path.clone(), text);
        let module = parser::parse(&self.sources, file)?;
        let is_main = self.stack.len() == 1;
        for item in module.items {
            match item {
                Item::Use { path: used, span, alias } => {
                    let inner = match &alias {
                        Some(a) => format!("{namespace}{}.", a.name),
                        None => namespace.to_string(),
                    };
                    self.load_use(&path, &used, span, &inner)?
                }
                Item::Block(block) => {
                    let qualified = format!("{namespace}{}", block.name.name);
                    if let Some((prev_file, prev)) = self.blocks.get(&qualified) {
                        let first = self.sources.locate(Span { file: *prev_file, ..prev.name.span });
                        let mut d = Diagnostic::new(
                            ErrorKind::Duplicate,
                            format!("block `{qualified}` is defined twice"),
                            Some(self.sources.locate(block.name.span)),
                        )
                        .with_primary_label("defined again here")
                        .with_label(first, "first defined here");
                        d = if *prev_file != file {
                            d.with_help(format!(
                                "rename one of them, or bring the file in under a name, `use \"...\" as ns`, and call its block as `ns.{}(...)`",
                                block.name.name
                            ))
                        } else {
                            d.with_help("rename one of them")
                        };
                        return Err(d);
                    }
                    if super::builtins::is_builtin(&block.name.name) {
                        return Err(Diagnostic::new(
                            ErrorKind::Duplicate,
                            format!(
                                "`{}` is a built-in op and cannot be redefined as a block",
                                block.name.name
                            ),
                            Some(self.sources.locate(block.name.span)),
                        ));
                    }
                    self.block_namespaces.insert(qualified.clone(), namespace.to_string());
                    self.blocks.insert(qualified, (file, block));
                }
                Item::Network(net) => {
                    if !is_main {
                        return Err(Diagnostic::new(
                            ErrorKind::Structure,
                            "a file brought in with `use` may define blocks only, not a network",
                            Some(self.sources.locate(net.name.span)),
                        ));
                    }
                    self.networks.push((file, net));
                }
            }
        }
        self.stack.pop();
        Ok(())
    }

    fn load_use(&mut self, from: &Path, used: &str, span: Span, namespace: &str) -> Result<(), Diagnostic> {
        let tried = candidates(from, used);
        let Some(target) = tried.iter().find(|p| p.exists()).cloned() else {
            let mut d = Diagnostic::new(
                ErrorKind::Io,
                format!("cannot find `{used}`"),
                Some(self.sources.locate(span)),
            );
            for p in &tried {
                d = d.with_note(format!("not at {}", p.display()));
            }
            return Err(d.with_help(format!(
                "a `use` path is relative to the using file, then to each folder of {SEARCH_PATH_VAR}, then to netc's models/"
            )));
        };
        let key = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
        if let Some(pos) = self.stack.iter().position(|p| *p == key) {
            let chain: Vec<String> = self.stack[pos..]
                .iter()
                .chain(std::iter::once(&key))
                .map(|p| {
                    p.file_name()
                        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
                })
                .collect();
            return Err(Diagnostic::new(
                ErrorKind::Recursion,
                format!("`use` cycle: {}", chain.join(" -> ")),
                Some(self.sources.locate(span)),
            ));
        }
        if self.loaded.contains(&(key, namespace.to_string())) {
            return Ok(());
        }
        let text = read(&target, Some(span), &self.sources)?;
        self.load_file(target, text, namespace)
    }
}
