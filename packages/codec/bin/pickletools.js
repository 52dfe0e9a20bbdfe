#!/usr/bin/env node
// The pickletools command. This file is tracked (dist/ is built), so that package managers can
// link the bin when the workspace is installed, before the first build.
import '../dist/cli/pickletools.js'
