defmodule PythonContextTest do
  # The examples of docs/context-affinity.md, in Elixir: process binding,
  # explicit contexts, with_context, what is guaranteed, cleanup, exhaustion.
  use ExUnit.Case, async: false
  import PythonTest.Helpers

  alias Python.Context

  setup do
    pool_idle!()
    on_exit(&Python.unbind/0)
  end

  defp num_workers, do: Application.get_env(:erlang_python, :num_workers)

  # Guardian pid of the worker bound to the calling process / to a context
  # created by it (py_pool:workers/0).
  defp guardian(kind) do
    me = self()
    [pid] = for %{pid: pid, bound: {^kind, ^me}} <- :py_pool.workers(), do: pid
    pid
  end

  describe "binding the process" do
    test "bind, state across calls, idempotent bind, unbind" do
      assert Python.bound?() == false
      assert Python.bind() == :ok
      assert Python.bound?() == true
      assert Python.exec("counter = 0") == :ok
      assert Python.exec("counter += 1") == :ok
      assert Python.eval("counter") == {:ok, 1}
      # binding again keeps the same worker and its state
      assert Python.bind() == :ok
      assert Python.eval("counter") == {:ok, 1}
      n = num_workers()
      assert %{available_workers: available, checked_out: 1, num_workers: ^n} = stats()
      assert available == n - 1
      assert Python.unbind() == :ok
      assert Python.bound?() == false
      assert Python.unbind() == :ok
    end

    test "functions defined by exec are callable as :__main__ functions" do
      :ok = Python.bind()
      assert Python.exec("def greet(name):\n    return 'hello ' + name") == :ok
      assert Python.call(:__main__, :greet, ["elixir"]) == {:ok, "hello elixir"}
      assert Python.call!(:__main__, :greet, ["erlang"]) == "hello erlang"
      :ok = Python.unbind()
    end

    test "a spawned process is not bound" do
      :ok = Python.bind()
      :ok = Python.exec("mine = 1")

      task =
        Task.async(fn ->
          {Python.bound?(), Python.with_context(fn -> Python.eval("'mine' in globals()") end)}
        end)

      assert Task.await(task) == {false, {:ok, false}}
      assert Python.eval("mine") == {:ok, 1}
    end
  end

  describe "explicit contexts" do
    test "two contexts, two namespaces" do
      {:ok, ctx1} = Context.new()
      {:ok, ctx2} = Context.new()
      assert %Context{} = ctx1
      assert Context.exec(ctx1, "x = 'one'") == :ok
      assert Context.exec(ctx2, "x = 'two'") == :ok
      assert {Context.eval(ctx1, "x"), Context.eval(ctx2, "x")} == {{:ok, "one"}, {:ok, "two"}}
      assert Context.exec(ctx1, "def double(n):\n    return 2 * n") == :ok
      assert Context.call(ctx1, :__main__, :double, [21]) == {:ok, 42}
      assert Context.call(ctx1, :math, :pow, [2, 10], timeout: 5000) == {:ok, 1024.0}
      assert Context.eval(ctx1, "x + suffix", %{suffix: "!"}) == {:ok, "one!"}
      assert Context.eval(ctx1, "x + suffix", locals: [suffix: "?"], timeout: 1000) == {:ok, "one?"}
      assert Context.exec(ctx2, "x = x * n", locals: [n: 2]) == :ok
      assert Context.eval!(ctx2, "x") == "twotwo"
      assert Python.bound?() == false
      assert %{checked_out: 2} = stats()
      assert Context.release(ctx1) == :ok
      assert Context.release(ctx1) == :ok

      assert {:error, %Python.Error{reason: :context_not_bound, type: nil}} =
               Context.eval(ctx1, "x")

      assert {:error, %Python.Error{reason: :context_not_bound}} = Context.exec(ctx1, "x = 1")

      assert {:error, %Python.Error{reason: :context_not_bound}} =
               Context.call(ctx1, :math, :sqrt, [4])

      assert_raise Python.Error, ~r/context not bound/, fn -> Context.eval!(ctx1, "x") end
      assert Context.eval(ctx2, "x") == {:ok, "twotwo"}
      assert Context.release(ctx2) == :ok
    end

    test "the context: option of the Python functions" do
      {:ok, ctx} = Context.new()
      :ok = Python.exec("y = 5", context: ctx)
      assert Python.eval("y * 2", context: ctx) == {:ok, 10}
      assert Python.eval("y * z", %{z: 3}, context: ctx, timeout: 1000) == {:ok, 15}
      assert Python.call(:builtins, :abs, [-3], context: ctx, timeout: 1000) == {:ok, 3}

      assert {:error, %Python.Error{reason: :timeout}} =
               Python.exec("while True: pass", context: ctx, timeout: 100)

      assert Context.exec(ctx, "y = 5", timeout: 1000) == :ok
      assert Context.eval!(ctx, "y") == 5
      :ok = Context.release(ctx)
    end

    test "bang functions and Python errors on a context" do
      {:ok, ctx} = Context.new()
      assert Context.call!(ctx, :math, :sqrt, [81]) == 9.0
      assert Context.exec!(ctx, "import json") == :ok
      assert Context.eval!(ctx, "json.dumps(v)", %{v: [1]}) == "[1]"
      assert Context.exec!(ctx, "w = v", locals: [v: 7]) == :ok
      assert Context.eval!(ctx, "w", locals: []) == 7

      error = assert_raise Python.Error, fn -> Context.call!(ctx, :math, :sqrt, [-1]) end
      assert %Python.Error{type: :ValueError, message: "math domain error"} = error
      assert error.traceback =~ "ValueError"

      assert {:error, %Python.Error{type: :NameError}} = Context.eval(ctx, "nope")
      assert_raise Python.Error, ~r/^NameError/, fn -> Context.exec!(ctx, "nope") end

      assert {:error, %Python.Error{reason: :timeout}} =
               Context.eval(ctx, "[i for i in iter(int, 1)]", timeout: 50)

      # the namespace survives a timeout
      assert Context.eval(ctx, "w") == {:ok, 7}
      :ok = Context.release(ctx)
    end

    test "another process may use a context it was given" do
      {:ok, ctx} = Context.new()
      :ok = Context.exec(ctx, "shared = []")

      1..3
      |> Enum.map(fn i -> Task.async(fn -> Context.exec(ctx, "shared.append(i)", %{i: i}) end) end)
      |> Enum.each(&(:ok = Task.await(&1)))

      assert Context.eval(ctx, "sorted(shared)") == {:ok, [1, 2, 3]}
      :ok = Context.release(ctx)
    end
  end

  describe "with_context/1" do
    test "fun/0 binds the process for the fun only" do
      assert Python.with_context(fn ->
               assert Python.bound?()
               :ok = Python.exec("total = sum(range(10))")
               Python.eval("total")
             end) == {:ok, 45}

      assert Python.bound?() == false
    end

    test "fun/1 gets a fresh context" do
      assert Python.with_context(fn %Context{} = ctx ->
               Context.eval(ctx, "__import__('json').dumps([1, 2])")
             end) == {:ok, "[1, 2]"}

      assert Python.with_context(fn ctx ->
               :ok = Context.exec(ctx, "acc = 1")
               Enum.each(1..4, fn _ -> :ok = Context.exec(ctx, "acc *= 2") end)
               Context.eval!(ctx, "acc")
             end) == 16
    end

    test "returns what the fun returns, even {:error, _} tuples of its own" do
      assert Python.with_context(fn -> :ran end) == :ran

      assert Python.with_context(fn -> {:error, :no_workers_available} end) ==
               {:error, :no_workers_available}
    end

    test "releases when the fun raises" do
      assert_raise RuntimeError, "boom", fn -> Python.with_context(fn -> raise "boom" end) end
      assert_raise RuntimeError, "boom", fn -> Python.with_context(fn _ctx -> raise "boom" end) end
      assert Python.bound?() == false
      pool_idle!()
    end

    test "a process bound already keeps its binding" do
      :ok = Python.bind()
      :ok = Python.exec("kept = 'yes'")
      assert Python.with_context(fn -> Python.eval("kept") end) == {:ok, "yes"}
      assert Python.bound?()
      assert Python.eval("kept") == {:ok, "yes"}
    end
  end

  describe "what is guaranteed" do
    test "one OS thread per binding: thread-bound objects work across calls" do
      Python.with_context(fn ->
        idents = for _ <- 1..10, do: Python.call!(:threading, :get_ident)
        assert length(Enum.uniq(idents)) == 1

        :ok =
          Python.exec("""
          import sqlite3
          conn = sqlite3.connect(':memory:')
          conn.execute('CREATE TABLE t (v INTEGER)')
          """)

        :ok = Python.exec("conn.execute('INSERT INTO t VALUES (?)', (v,))", %{v: 42})
        assert Python.eval("conn.execute('SELECT v FROM t').fetchall()") == {:ok, [{42}]}
      end)

      # each binding has a thread of its own
      {:ok, c1} = Context.new()
      {:ok, c2} = Context.new()
      assert Context.call!(c1, :threading, :get_ident) != Context.call!(c2, :threading, :get_ident)
      :ok = Context.release(c1)
      :ok = Context.release(c2)
    end

    test "the namespace is wiped on release" do
      # hold every worker: the next binding is on one of these, wiped
      ctxs = for _ <- 1..num_workers(), do: elem(Context.new(), 1)
      Enum.each(ctxs, &(:ok = Context.exec(&1, "counter = 1")))
      Enum.each(ctxs, &Context.release/1)
      pool_idle!()

      for _ <- 1..num_workers() do
        assert Python.with_context(fn -> Python.eval("'counter' in globals()") end) == {:ok, false}
      end
    end

    test "state left by unbound calls does not leak into a binding" do
      for _ <- 1..(2 * num_workers()), do: :ok = Python.exec("left_behind = 1")
      ctxs = for _ <- 1..num_workers(), do: elem(Context.new(), 1)

      assert Enum.map(ctxs, &Context.eval(&1, "'left_behind' in globals()")) ==
               List.duplicate({:ok, false}, num_workers())

      assert Enum.map(ctxs, &Context.release/1) == List.duplicate(:ok, num_workers())
    end
  end

  describe "cleanup" do
    test "when the holder dies, all it held is released" do
      parent = self()

      binder =
        spawn(fn ->
          :ok = Python.bind()
          {:ok, _ctx} = Context.new()
          send(parent, :bound)
          receive do: (:stop -> :ok)
        end)

      assert_receive :bound, 5000
      bound = for %{bound: b} <- :py_pool.workers(), b != false, do: b
      assert Enum.sort(bound) == [{:context, binder}, {:process, binder}]
      Process.exit(binder, :kill)
      assert eventually(fn -> Enum.all?(:py_pool.workers(), &(&1.bound == false)) end)
      pool_idle!()
    end

    test "a lost worker: the context is not bound any more, the pool replaces it" do
      {:ok, ctx} = Context.new()
      :ok = Context.exec(ctx, "state = 'kept'")
      ids = Enum.map(:py_pool.workers(), & &1.id)
      Process.exit(guardian(:context), :kill)

      assert eventually(fn ->
               match?(
                 {:error, %Python.Error{reason: :context_not_bound}},
                 Context.eval(ctx, "state")
               )
             end)

      assert Context.release(ctx) == :ok
      pool_idle!()
      assert Enum.map(:py_pool.workers(), & &1.id) != ids
    end

    test "a lost worker: the bound process gets :worker_crashed once, then is unbound" do
      :ok = Python.bind()
      guardian = guardian(:process)
      Process.exit(guardian, :kill)
      # the pool has taken the worker out of service (not asked through
      # Python.bound?/0, which would notice the loss itself)
      assert eventually(fn -> Enum.all?(:py_pool.workers(), &(&1.pid != guardian)) end)

      assert {:error, %Python.Error{reason: :worker_crashed}} = Python.eval("1 + 1")
      assert Python.eval("1 + 1") == {:ok, 2}
      assert Python.bound?() == false

      assert_raise Python.Error, ~r/^worker crashed/, fn ->
        raise Python.Error.from_reason(:worker_crashed)
      end

      pool_idle!()
    end
  end

  describe "exhaustion" do
    test "with every worker bound, binding and unbound calls fail at once" do
      ctxs = for _ <- 1..num_workers(), do: elem(Context.new(), 1)
      assert %{available_workers: 0, checked_out: n} = stats()
      assert n == num_workers()

      assert {:error, %Python.Error{reason: :no_workers_available} = e} = Python.bind()
      assert e.message =~ "no Python worker available"
      assert {:error, %Python.Error{reason: :no_workers_available}} = Context.new()
      me = self()

      assert {:error, %Python.Error{reason: :no_workers_available}} =
               Python.with_context(fn -> send(me, :ran) end)

      assert {:error, %Python.Error{reason: :no_workers_available}} =
               Python.with_context(fn _ -> send(me, :ran) end)

      refute_received :ran
      assert {:error, %Python.Error{reason: :no_workers_available}} = Python.eval("1 + 1")
      assert_raise Python.Error, ~r/no Python worker/, fn -> Python.call!(:math, :sqrt, [4]) end
      # calls on the bound workers keep working
      assert Context.eval(hd(ctxs), "1 + 1") == {:ok, 2}
      Enum.each(ctxs, &Context.release/1)
      pool_idle!()
      assert Python.eval("1 + 1") == {:ok, 2}
    end
  end
end
