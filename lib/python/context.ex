defmodule Python.Context do
  @moduledoc """
  An explicit context: a Python worker of its own, with its own namespace
  (`__main__`) and OS thread, held as a value (`py:bind(new)` underneath).

  Names one call defines are there for the next one on the same context.
  One process may hold several contexts, each isolated from the others,
  and may pass them to other processes. A context is released by
  `release/1`, by `Python.with_context/1` when its function returns, or
  when the process that created it dies. Releasing wipes the namespace.

      {:ok, ctx} = Python.Context.new()
      :ok = Python.Context.exec(ctx, "def double(n):\\n    return 2 * n")
      {:ok, 42} = Python.Context.call(ctx, :__main__, :double, [21])
      :ok = Python.Context.release(ctx)

  The functions here are `Python.call/4`, `Python.eval/3` and
  `Python.exec/3` with the option `context: ctx`, and take the same
  options. A context that was released, or whose worker was lost, gives
  `{:error, %Python.Error{reason: :context_not_bound}}` (the bang
  functions raise it).

  Each context takes a worker out of the shared pool until it is released:
  prefer `Python.with_context/1` for short work. See docs/context-affinity.md.
  """

  @enforce_keys [:ref]
  defstruct [:ref]

  @typedoc "A context; `:ref` is the `py:ctx()` of the Erlang API."
  @type t :: %__MODULE__{ref: :py.ctx()}

  @doc """
  Takes a worker from the pool as a new context, owned by the calling
  process. `{:error, %Python.Error{reason: :no_workers_available}}` when
  every worker is bound already.
  """
  @spec new() :: {:ok, t()} | {:error, Python.Error.t()}
  def new do
    case :py.bind(:new) do
      {:ok, ref} -> {:ok, %__MODULE__{ref: ref}}
      {:error, reason} -> {:error, Python.Error.from_reason(reason)}
    end
  end

  @doc "Releases the context (`:ok` also when it was released already)."
  @spec release(t()) :: :ok
  def release(%__MODULE__{ref: ref}), do: :py.unbind(ref)

  @doc """
  Calls `module.function(*args, **kwargs)` on the context's worker.
  Options: `timeout:`, `kwargs:` (see `Python.call/4`).

      Python.Context.call(ctx, :math, :pow, [2, 10], timeout: 5_000)
      #=> {:ok, 1024.0}
  """
  @spec call(t(), Python.name(), Python.name(), list(), [Python.call_option()]) :: Python.result()
  def call(%__MODULE__{} = ctx, module, function, args \\ [], opts \\ []),
    do: Python.call(module, function, args, with_ctx(ctx, opts))

  @doc "`call/5`, returning the value or raising `Python.Error`."
  @spec call!(t(), Python.name(), Python.name(), list(), [Python.call_option()]) :: term()
  def call!(%__MODULE__{} = ctx, module, function, args \\ [], opts \\ []),
    do: Python.call!(module, function, args, with_ctx(ctx, opts))

  @doc """
  Evaluates an expression in the context's namespace. `locals` (a map)
  are visible to it for this call only; the second argument may instead
  be the options: `timeout:`, `locals:` (see `Python.eval/3`).

      Python.Context.eval(ctx, "x + suffix", %{suffix: "!"})
  """
  @spec eval(t(), Python.code(), Python.locals() | [Python.code_option()], [Python.code_option()]) ::
          Python.result()
  def eval(ctx, code, locals \\ %{}, opts \\ [])

  def eval(%__MODULE__{} = ctx, code, opts, []) when is_list(opts),
    do: Python.eval(code, %{}, with_ctx(ctx, opts))

  def eval(%__MODULE__{} = ctx, code, locals, opts),
    do: Python.eval(code, locals, with_ctx(ctx, opts))

  @doc "`eval/4`, returning the value or raising `Python.Error`."
  @spec eval!(t(), Python.code(), Python.locals() | [Python.code_option()], [Python.code_option()]) ::
          term()
  def eval!(ctx, code, locals \\ %{}, opts \\ [])

  def eval!(%__MODULE__{} = ctx, code, opts, []) when is_list(opts),
    do: Python.eval!(code, %{}, with_ctx(ctx, opts))

  def eval!(%__MODULE__{} = ctx, code, locals, opts),
    do: Python.eval!(code, locals, with_ctx(ctx, opts))

  @doc """
  Runs statements in the context's namespace; what they define stays there
  for the context's later calls. Options: `locals:`, `timeout:` (as
  `Python.exec/3`).

      :ok = Python.Context.exec(ctx, "counter = 0")
  """
  @spec exec(t(), Python.code(), Python.locals() | [Python.code_option()], [Python.code_option()]) ::
          :ok | {:error, Python.Error.t()}
  def exec(ctx, code, locals \\ %{}, opts \\ [])

  def exec(%__MODULE__{} = ctx, code, opts, []) when is_list(opts),
    do: Python.exec(code, %{}, with_ctx(ctx, opts))

  def exec(%__MODULE__{} = ctx, code, locals, opts),
    do: Python.exec(code, locals, with_ctx(ctx, opts))

  @doc "`exec/4`, returning `:ok` or raising `Python.Error`."
  @spec exec!(t(), Python.code(), Python.locals() | [Python.code_option()], [Python.code_option()]) ::
          :ok
  def exec!(ctx, code, locals \\ %{}, opts \\ [])

  def exec!(%__MODULE__{} = ctx, code, opts, []) when is_list(opts),
    do: Python.exec!(code, %{}, with_ctx(ctx, opts))

  def exec!(%__MODULE__{} = ctx, code, locals, opts),
    do: Python.exec!(code, locals, with_ctx(ctx, opts))

  defp with_ctx(ctx, opts) when is_list(opts), do: Keyword.put(opts, :context, ctx)

  defp with_ctx(_ctx, opts),
    do: raise(ArgumentError, "options must be a keyword list, got: #{inspect(opts)}")
end
