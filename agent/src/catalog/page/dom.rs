//! The tree an HTML page parses into: html5ever builds it (the WHATWG algorithm, as a
//! browser does), this file only keeps it, with the line each element starts on so
//! that errors name a line of the HTML file.

use std::{
    borrow::Cow,
    cell::{Cell, Ref, RefCell},
};

use html5ever::{
    Attribute, QualName,
    tendril::StrTendril,
    tree_builder::{ElementFlags, NodeOrText, QuirksMode, TreeSink},
};

/// A node of the page; children by index into `Dom::nodes`.
#[derive(Debug)]
pub(super) struct Node {
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub kind: Kind,
    /// The element's name; an empty one for other nodes.
    pub name: QualName,
    /// The line (1-based) the node starts on.
    pub line: usize,
}

#[derive(Debug)]
pub(super) enum Kind {
    Document,
    Element {
        attrs: Vec<(String, String)>,
        /// A `<template>`'s contents, which are not its children.
        template: Option<usize>,
    },
    Text(String),
    /// Comments, processing instructions: nothing the page lists.
    Other,
}

/// A parsed page.
#[derive(Debug)]
pub(super) struct Dom {
    pub nodes: Vec<Node>,
}

impl Dom {
    pub const ROOT: usize = 0;

    /// Parses `text` as a browser would.
    pub fn parse(text: &str) -> Dom {
        use html5ever::tendril::TendrilSink as _;
        html5ever::parse_document(Sink::default(), html5ever::ParseOpts::default()).one(text)
    }

    /// The element's local name, lowercase (`table`, `td`); empty for other nodes.
    pub fn tag(&self, node: usize) -> &str {
        &self.nodes[node].name.local
    }

    pub fn attr(&self, node: usize, name: &str) -> Option<&str> {
        match &self.nodes[node].kind {
            Kind::Element { attrs, .. } => attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// Every element below `node` (itself included), in document order.
    pub fn descendants(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev());
        }
        out
    }
}

fn placeholder_name() -> QualName {
    QualName::new(None, html5ever::ns!(), html5ever::local_name!(""))
}

/// Builds the `Dom`. html5ever calls it with `&self`, hence the cells.
struct Sink {
    nodes: RefCell<Vec<Node>>,
    line: Cell<u64>,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            nodes: RefCell::new(vec![Node {
                parent: None,
                children: Vec::new(),
                kind: Kind::Document,
                name: placeholder_name(),
                line: 1,
            }]),
            line: Cell::new(1),
        }
    }
}

impl Sink {
    fn new_node(&self, kind: Kind, name: QualName) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            parent: None,
            children: Vec::new(),
            kind,
            name,
            line: usize::try_from(self.line.get()).unwrap_or(usize::MAX),
        });
        nodes.len() - 1
    }

    fn detach(&self, node: usize) {
        let mut nodes = self.nodes.borrow_mut();
        if let Some(parent) = nodes[node].parent.take() {
            nodes[parent].children.retain(|&c| c != node);
        }
    }

    /// Puts `child` into `parent` at `index` (the end when `None`), merging text into
    /// a text node just before it, as the tree builder expects.
    fn insert(&self, parent: usize, index: Option<usize>, child: NodeOrText<usize>) {
        let at = index.unwrap_or_else(|| self.nodes.borrow()[parent].children.len());
        match child {
            NodeOrText::AppendText(text) => {
                let before = at.checked_sub(1).map(|i| self.nodes.borrow()[parent].children[i]);
                if let Some(before) = before
                    && let Kind::Text(existing) = &mut self.nodes.borrow_mut()[before].kind
                {
                    existing.push_str(&text);
                    return;
                }
                let node = self.new_node(Kind::Text(text.to_string()), placeholder_name());
                let mut nodes = self.nodes.borrow_mut();
                nodes[node].parent = Some(parent);
                nodes[parent].children.insert(at, node);
            }
            NodeOrText::AppendNode(node) => {
                self.detach(node);
                let mut nodes = self.nodes.borrow_mut();
                let at = at.min(nodes[parent].children.len());
                nodes[node].parent = Some(parent);
                nodes[parent].children.insert(at, node);
            }
        }
    }
}

impl TreeSink for Sink {
    type Handle = usize;
    type Output = Dom;
    type ElemName<'a> = Ref<'a, QualName>;

    fn finish(self) -> Dom {
        Dom {
            nodes: self.nodes.into_inner(),
        }
    }

    // The parser recovers from every error as a browser does; so does the reader.
    fn parse_error(&self, _msg: Cow<'static, str>) {}

    fn get_document(&self) -> usize {
        Dom::ROOT
    }

    fn elem_name<'a>(&'a self, target: &'a usize) -> Ref<'a, QualName> {
        Ref::map(self.nodes.borrow(), |nodes| &nodes[*target].name)
    }

    fn create_element(&self, name: QualName, attrs: Vec<Attribute>, flags: ElementFlags) -> usize {
        let template = flags
            .template
            .then(|| self.new_node(Kind::Document, placeholder_name()));
        let attrs = attrs
            .into_iter()
            .map(|a| (a.name.local.to_string(), a.value.to_string()))
            .collect();
        self.new_node(Kind::Element { attrs, template }, name)
    }

    fn create_comment(&self, _text: StrTendril) -> usize {
        self.new_node(Kind::Other, placeholder_name())
    }

    fn create_pi(&self, _target: StrTendril, _data: StrTendril) -> usize {
        self.new_node(Kind::Other, placeholder_name())
    }

    fn append(&self, parent: &usize, child: NodeOrText<usize>) {
        self.insert(*parent, None, child);
    }

    fn append_based_on_parent_node(&self, element: &usize, prev_element: &usize, child: NodeOrText<usize>) {
        if self.nodes.borrow()[*element].parent.is_some() {
            self.append_before_sibling(element, child);
        } else {
            self.append(prev_element, child);
        }
    }

    fn append_doctype_to_document(&self, _name: StrTendril, _public_id: StrTendril, _system_id: StrTendril) {}

    fn get_template_contents(&self, target: &usize) -> usize {
        match &self.nodes.borrow()[*target].kind {
            Kind::Element {
                template: Some(contents),
                ..
            } => *contents,
            _ => *target,
        }
    }

    fn same_node(&self, x: &usize, y: &usize) -> bool {
        x == y
    }

    fn set_quirks_mode(&self, _mode: QuirksMode) {}

    fn append_before_sibling(&self, sibling: &usize, new_node: NodeOrText<usize>) {
        let Some(parent) = self.nodes.borrow()[*sibling].parent else {
            return;
        };
        if let NodeOrText::AppendNode(node) = &new_node {
            self.detach(*node);
        }
        let index = self.nodes.borrow()[parent].children.iter().position(|c| c == sibling);
        self.insert(parent, index, new_node);
    }

    fn add_attrs_if_missing(&self, target: &usize, attrs: Vec<Attribute>) {
        if let Kind::Element { attrs: existing, .. } = &mut self.nodes.borrow_mut()[*target].kind {
            for a in attrs {
                let name = a.name.local.to_string();
                if !existing.iter().any(|(n, _)| *n == name) {
                    existing.push((name, a.value.to_string()));
                }
            }
        }
    }

    fn remove_from_parent(&self, target: &usize) {
        self.detach(*target);
    }

    fn reparent_children(&self, node: &usize, new_parent: &usize) {
        let children = std::mem::take(&mut self.nodes.borrow_mut()[*node].children);
        let mut nodes = self.nodes.borrow_mut();
        for &child in &children {
            nodes[child].parent = Some(*new_parent);
        }
        nodes[*new_parent].children.extend(children);
    }

    fn set_current_line(&self, line: u64) {
        self.line.set(line);
    }
}
