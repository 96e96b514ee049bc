/** Backend qualification (see DESIGN.md §1 and §3). */
package dev.crucible.qualify;
