//! Table-driven tests of the whole rewriter.
